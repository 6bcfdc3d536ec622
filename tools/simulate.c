/*
 * kvpool simulate: disaggregated serving of a trace, simulated, to compare
 * the scheduling policies.
 *
 *   kvpool simulate TRACE [--prefill N] [--decode M] [--policy NAME|all]
 *                   [--capacity-blocks C] [--decode-blocks D] [--seed S]
 *                   [--time-scale X] [--slo-ttft S] [--eviction-policy P]
 *                   [--cost KEY=VALUE]... [--requests N] [--json]
 *
 * A discrete-event simulation of N prefill and M decode instances.  The
 * decisions are the real scheduler's (<kvcoord/sched.h>, the code
 * kvpool-coord runs) over the real prefix index; each prefill instance's
 * cache is a simulated pool node co-located with it (cache_model.h: the
 * real eviction code, C blocks), recorded in the index as node i.  Only
 * time is simulated, with the scheduler's cost model:
 *
 * - A request arrives at its trace timestamp (/ --time-scale) and is
 *   scheduled at once.  Its prefill instance serves requests one at a
 *   time, in order.  When one starts, the blocks of its plan are checked
 *   again (an eviction since the decision shortens them); it takes
 *   transfer (local blocks at local bandwidth, others at remote) + prefill
 *   of the rest.  When it ends, the first token is out (TTFT), and the
 *   instance's cache holds the whole prompt (loaded and computed blocks).
 * - The KV of the prompt moves to the decode instance (remote bandwidth);
 *   the decode instance admits requests while it has free KV blocks for
 *   prompt + output, else they wait in order.  Running requests advance
 *   together, one token per step; a step takes decode_step_s +
 *   decode_step_per_request_s x running (continuous batching).
 * - Instances report their load (queued prefill tokens, running requests,
 *   free blocks) to the scheduler whenever it changes.
 *
 * Ties between events go in the order they were made, and the random
 * policy takes --seed: a run is deterministic.
 */
#include "cache_model.h"
#include "cli.h"
#include "workload.h"

#include <kv/alloc.h>
#include <kv/util.h>
#include <kvcoord/prefix_index.h>
#include <kvcoord/sched.h>
#include <kvstore/evict.h>

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/** Most instances of each role. */
#define SIM_INSTANCES_MAX 1024
/** Most --cost settings. */
#define SIM_COSTS_MAX 32
/** Most requests read from a trace. */
#define SIM_REQUESTS_MAX 10000000ull

/* Defaults: one instance's host DRAM (1 TiB) and decode KV memory (8 x
   80 GB of HBM less 140 GB of fp16 weights), in 512-token blocks of the
   default model's 160 MiB. */
#define SIM_DEFAULT_CAPACITY_BLOCKS 6500
#define SIM_DEFAULT_DECODE_BLOCKS 2900
#define SIM_DEFAULT_SLO_TTFT_S 5.0

typedef struct sim_opts {
    const char     *trace;
    uint32_t        prefill, decode;
    int             policies[KV_SCHED_POLICY_COUNT]; /* which to run */
    uint64_t        capacity_blocks;
    uint64_t        decode_blocks;
    uint64_t        seed;
    double          time_scale;
    double          slo_ttft_s;
    const char     *eviction;
    uint64_t        max_requests;
    kv_sched_cost_t cost;
    int             json;
} sim_opts_t;

/* One trace request, with what happened to it. */
typedef struct sim_req {
    double          arrival; /* s */
    uint32_t        prompt, output;
    uint32_t        n_keys;
    size_t          key_off; /* into the keys array */
    kv_sched_plan_t plan;
    uint64_t        queued_tokens; /* what it added to its instance's queue */
    uint32_t        loaded;        /* blocks the prefill did not compute */
    uint32_t        need;          /* decode KV blocks */
    double          ttft, decode_start, finish;
    double          remaining; /* decode tokens left */
} sim_req_t;

typedef struct sim_trace {
    sim_req_t *reqs;
    size_t     n;
    kvp_key_t *keys;
    size_t     n_keys;
} sim_trace_t;

/* A FIFO of request indexes. */
typedef struct sim_fifo {
    uint32_t *items;
    size_t    head, len, cap;
} sim_fifo_t;

typedef struct sim_prefill {
    uint32_t          id; /* scheduler id = pool node id */
    kv_cache_model_t *cache;
    sim_fifo_t        queue;
    int               busy;
    uint64_t          queued_tokens;
    uint64_t          served;
} sim_prefill_t;

typedef struct sim_decode {
    uint32_t   id;
    sim_fifo_t waiting;
    uint32_t  *running; /* request indexes */
    size_t     n_running, cap_running;
    uint64_t   free_blocks;
    double     last; /* time the running ones were advanced to */
    uint64_t   gen;  /* the live completion event's */
} sim_decode_t;

enum { EV_ARRIVE, EV_PREFILL_DONE, EV_DECODE_ARRIVE, EV_DECODE_STEP };

typedef struct sim_event {
    double   t;
    uint64_t seq;
    int      type;
    uint32_t target; /* instance slot */
    uint32_t req;
    uint64_t gen;
} sim_event_t;

typedef struct sim {
    const sim_opts_t  *opts;
    sim_trace_t       *trace;
    kv_prefix_index_t *index;
    uint32_t           ns;
    kv_sched_t        *sched;
    sim_prefill_t     *pre;
    sim_decode_t      *dec;
    sim_event_t       *heap;
    size_t             n_heap, cap_heap;
    uint64_t           seq;
    double             now;
} sim_t;

/* ---- small containers -------------------------------------------------- */

static void fifo_push(sim_fifo_t *f, uint32_t v)
{
    if (f->len == f->cap) {
        size_t    cap   = f->cap ? 2 * f->cap : 16;
        uint32_t *items = kv_malloc(cap * sizeof(*items), "sim fifo");

        for (size_t i = 0; i < f->len; i++) {
            items[i] = f->items[(f->head + i) % f->cap];
        }
        kv_free(f->items);
        f->items = items;
        f->cap   = cap;
        f->head  = 0;
    }
    f->items[(f->head + f->len++) % f->cap] = v;
}

static uint32_t fifo_peek(const sim_fifo_t *f)
{
    return f->items[f->head];
}

static uint32_t fifo_pop(sim_fifo_t *f)
{
    uint32_t v = f->items[f->head];

    f->head = (f->head + 1) % f->cap;
    f->len--;
    return v;
}

static int event_before(const sim_event_t *a, const sim_event_t *b)
{
    return a->t < b->t || (a->t == b->t && a->seq < b->seq);
}

static void push_event(sim_t *sim, double t, int type, uint32_t target, uint32_t req,
                       uint64_t gen)
{
    size_t i;

    if (sim->n_heap == sim->cap_heap) {
        sim->cap_heap = sim->cap_heap ? 2 * sim->cap_heap : 1024;
        sim->heap =
            kv_realloc(sim->heap, sim->cap_heap * sizeof(*sim->heap), "sim events");
    }
    i            = sim->n_heap++;
    sim->heap[i] = (sim_event_t){t, sim->seq++, type, target, req, gen};
    while (i > 0 && event_before(&sim->heap[i], &sim->heap[(i - 1) / 2])) {
        sim_event_t tmp        = sim->heap[i];
        sim->heap[i]           = sim->heap[(i - 1) / 2];
        sim->heap[(i - 1) / 2] = tmp;
        i                      = (i - 1) / 2;
    }
}

static sim_event_t pop_event(sim_t *sim)
{
    sim_event_t top = sim->heap[0];
    size_t      i   = 0;

    sim->heap[0] = sim->heap[--sim->n_heap];
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < sim->n_heap && event_before(&sim->heap[l], &sim->heap[m])) {
            m = l;
        }
        if (r < sim->n_heap && event_before(&sim->heap[r], &sim->heap[m])) {
            m = r;
        }
        if (m == i) {
            break;
        }
        sim_event_t tmp = sim->heap[i];
        sim->heap[i]    = sim->heap[m];
        sim->heap[m]    = tmp;
        i               = m;
    }
    return top;
}

/* ---- the trace ----------------------------------------------------------- */

static int load_trace(const sim_opts_t *opts, sim_trace_t *trace)
{
    kv_workload_t *workload;
    kv_request_t   r;
    kvp_status_t   status;
    size_t         cap = 0, key_cap = 0;
    uint64_t       first_ms = 0;
    char           err[512];

    if (kv_workload_trace_open(opts->trace, &workload, err, sizeof(err)) != KVP_OK) {
        fprintf(stderr, "kvpool simulate: %s\n", err);
        return 0;
    }
    memset(trace, 0, sizeof(*trace));
    while (opts->max_requests == 0 || trace->n < opts->max_requests) {
        sim_req_t *q;

        status = kv_workload_next(workload, &r);
        if (status == KVP_ERR_NOT_FOUND) {
            break;
        }
        if (status != KVP_OK || r.num_keys > KV_INDEX_MAX_CHAIN || r.input_tokens == 0 ||
            trace->n >= SIM_REQUESTS_MAX) {
            fprintf(stderr, "kvpool simulate: %s\n",
                    status != KVP_OK ? kv_workload_error(workload)
                                     : "a request has an empty prompt, more blocks "
                                       "than the index matches, or the trace has "
                                       "too many requests");
            kv_workload_destroy(workload);
            return 0;
        }
        if (trace->n == 0) {
            first_ms = r.timestamp_ms;
        }
        if (trace->n == cap) {
            cap = cap ? 2 * cap : 4096;
            trace->reqs =
                kv_realloc(trace->reqs, cap * sizeof(*trace->reqs), "sim requests");
        }
        if (trace->n_keys + r.num_keys > key_cap) {
            key_cap = KV_MAX(2 * key_cap, trace->n_keys + r.num_keys + 65536);
            trace->keys =
                kv_realloc(trace->keys, key_cap * sizeof(*trace->keys), "sim keys");
        }
        q = &trace->reqs[trace->n++];
        memset(q, 0, sizeof(*q));
        q->arrival =
            (double)(r.timestamp_ms >= first_ms ? r.timestamp_ms - first_ms : 0) / 1e3 /
            opts->time_scale;
        q->prompt  = r.input_tokens;
        q->output  = r.output_tokens;
        q->n_keys  = (uint32_t)r.num_keys;
        q->key_off = trace->n_keys;
        q->need =
            (uint32_t)(((uint64_t)q->prompt + q->output + opts->cost.block_tokens - 1) /
                       opts->cost.block_tokens);
        if (q->need > opts->decode_blocks) {
            fprintf(stderr,
                    "kvpool simulate: %s: request %zu needs %u KV blocks, more "
                    "than a decode instance holds (--decode-blocks %llu)\n",
                    opts->trace, trace->n, q->need,
                    (unsigned long long)opts->decode_blocks);
            kv_workload_destroy(workload);
            return 0;
        }
        memcpy(trace->keys + trace->n_keys, r.keys, r.num_keys * sizeof(*r.keys));
        trace->n_keys += r.num_keys;
    }
    kv_workload_destroy(workload);
    if (trace->n == 0) {
        fprintf(stderr, "kvpool simulate: %s has no requests\n", opts->trace);
        return 0;
    }
    return 1;
}

/* ---- the instances ------------------------------------------------------- */

static const kvp_key_t *req_keys(const sim_t *sim, const sim_req_t *q)
{
    return sim->trace->keys + q->key_off;
}

static void report_prefill(sim_t *sim, const sim_prefill_t *p)
{
    kv_sched_load_t load = {p->queued_tokens, 0, sim->opts->capacity_blocks};

    kv_sched_report(sim->sched, p->id, &load);
}

static void report_decode(sim_t *sim, const sim_decode_t *d)
{
    kv_sched_load_t load = {0, (uint32_t)d->n_running, d->free_blocks};

    kv_sched_report(sim->sched, d->id, &load);
}

/* Start the next queued prefill of @p p, if any. */
static void prefill_start(sim_t *sim, uint32_t slot)
{
    sim_prefill_t         *p    = &sim->pre[slot];
    const kv_sched_cost_t *cost = &sim->opts->cost;
    sim_req_t             *q;
    const kvp_key_t       *keys;
    size_t                 local, load;
    double                 service;

    if (p->busy || p->queue.len == 0) {
        return;
    }
    q    = &sim->trace->reqs[fifo_pop(&p->queue)];
    keys = req_keys(sim, q);
    /* what is still there of the plan's blocks */
    local = kv_cache_model_prefix(p->cache, keys, q->plan.local);
    load  = local;
    if (q->plan.load > q->plan.local) {
        load = KV_MAX(local, kv_index_match(sim->index, sim->ns, keys, q->plan.load));
    }
    q->loaded = (uint32_t)load;
    service   = kv_sched_transfer_s(cost, local, cost->local_bytes_s) +
              kv_sched_transfer_s(cost, load - local, cost->remote_bytes_s) +
              kv_sched_prefill_s(
                  cost, KV_MIN((uint64_t)load * cost->block_tokens, (uint64_t)q->prompt),
                  q->prompt);
    p->busy = 1;
    push_event(sim, sim->now + service, EV_PREFILL_DONE, slot,
               (uint32_t)(q - sim->trace->reqs), 0);
}

static void on_arrive(sim_t *sim, uint32_t r)
{
    sim_req_t         *q   = &sim->trace->reqs[r];
    kv_sched_request_t req = {sim->ns, req_keys(sim, q), q->n_keys, q->prompt, q->output};
    const kv_sched_cost_t *cost = &sim->opts->cost;
    sim_prefill_t         *p;
    uint64_t               cached;

    if (kv_sched_schedule(sim->sched, sim->index, &req, &q->plan) != KVP_OK) {
        abort(); /* the request was checked when the trace was read */
    }
    p      = &sim->pre[q->plan.prefill - 1];
    cached = KV_MIN((uint64_t)q->plan.load * cost->block_tokens, (uint64_t)q->prompt);
    q->queued_tokens = q->prompt - cached;
    p->queued_tokens += q->queued_tokens;
    p->served++;
    fifo_push(&p->queue, r);
    prefill_start(sim, q->plan.prefill - 1);
    report_prefill(sim, p);
}

static void on_prefill_done(sim_t *sim, uint32_t slot, uint32_t r)
{
    sim_prefill_t         *p    = &sim->pre[slot];
    sim_req_t             *q    = &sim->trace->reqs[r];
    const kv_sched_cost_t *cost = &sim->opts->cost;
    int partial = (uint64_t)q->prompt < (uint64_t)q->n_keys * cost->block_tokens;

    q->ttft = sim->now - q->arrival;
    kv_cache_model_set_time(p->cache, (uint64_t)(sim->now * 1e3));
    if (kv_cache_model_use(p->cache, req_keys(sim, q), q->n_keys, partial) != KVP_OK) {
        abort(); /* a chain the index refused: not possible for trace chains */
    }
    p->queued_tokens -= q->queued_tokens;
    p->busy = 0;
    prefill_start(sim, slot);
    report_prefill(sim, p);
    /* the prompt's KV moves to the decode instance */
    push_event(sim,
               sim->now +
                   (double)q->prompt * cost->kv_bytes_per_token / cost->remote_bytes_s,
               EV_DECODE_ARRIVE, q->plan.decode - 1 - sim->opts->prefill, r, 0);
}

/* Advance the running requests of @p d to now. */
static void decode_advance(sim_t *sim, sim_decode_t *d)
{
    if (d->n_running > 0 && sim->now > d->last) {
        double step = kv_sched_decode_step_s(&sim->opts->cost, (uint32_t)d->n_running);
        double done = (sim->now - d->last) / step;

        for (size_t i = 0; i < d->n_running; i++) {
            sim->trace->reqs[d->running[i]].remaining -= done;
        }
    }
    d->last = sim->now;
}

/* Admit waiting requests that fit, and plan the next completion. */
static void decode_admit(sim_t *sim, uint32_t slot)
{
    sim_decode_t *d     = &sim->dec[slot];
    double        least = INFINITY;

    while (d->waiting.len > 0 &&
           sim->trace->reqs[fifo_peek(&d->waiting)].need <= d->free_blocks) {
        uint32_t   r = fifo_pop(&d->waiting);
        sim_req_t *q = &sim->trace->reqs[r];

        if (d->n_running == d->cap_running) {
            d->cap_running = d->cap_running ? 2 * d->cap_running : 64;
            d->running     = kv_realloc(d->running, d->cap_running * sizeof(*d->running),
                                        "sim running");
        }
        d->running[d->n_running++] = r;
        d->free_blocks -= q->need;
        q->decode_start = sim->now;
        q->remaining    = q->output;
    }
    for (size_t i = 0; i < d->n_running; i++) {
        least = KV_MIN(least, sim->trace->reqs[d->running[i]].remaining);
    }
    if (d->n_running > 0) {
        double step = kv_sched_decode_step_s(&sim->opts->cost, (uint32_t)d->n_running);
        push_event(sim, sim->now + KV_MAX(least, 0.0) * step, EV_DECODE_STEP, slot, 0,
                   ++d->gen);
    }
    report_decode(sim, d);
}

static void on_decode_arrive(sim_t *sim, uint32_t slot, uint32_t r)
{
    sim_decode_t *d = &sim->dec[slot];

    decode_advance(sim, d);
    fifo_push(&d->waiting, r);
    decode_admit(sim, slot);
}

static void on_decode_step(sim_t *sim, uint32_t slot, uint64_t gen)
{
    sim_decode_t *d    = &sim->dec[slot];
    size_t        kept = 0;

    if (gen != d->gen) {
        return; /* the batch changed since this was planned */
    }
    decode_advance(sim, d);
    for (size_t i = 0; i < d->n_running; i++) {
        sim_req_t *q = &sim->trace->reqs[d->running[i]];

        if (q->remaining <= 1e-6) {
            q->finish = sim->now;
            d->free_blocks += q->need;
        } else {
            d->running[kept++] = d->running[i];
        }
    }
    d->n_running = kept;
    decode_admit(sim, slot);
}

/* ---- a run --------------------------------------------------------------- */

typedef struct sim_result {
    double   ttft_mean, ttft_p50, ttft_p99;
    double   tbt_mean, decode_mean;
    double   hit_ratio, cached_ratio, token_hit_ratio, slo;
    double   makespan, wall;
    double   remote_share; /* loaded blocks that came from another node */
    uint64_t max_served, min_served;
} sim_result_t;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

static void summarise(const sim_t *sim, sim_result_t *res)
{
    const sim_trace_t *tr   = sim->trace;
    double            *ttft = kv_malloc(tr->n * sizeof(*ttft), "sim ttft");
    double             sum = 0, tbt = 0, dec = 0;
    uint64_t blocks = 0, loaded = 0, cached = 0, remote = 0, tokens = 0, hit_tokens = 0,
             in_slo = 0, tbt_n = 0;
    uint32_t bt = sim->opts->cost.block_tokens;

    for (size_t i = 0; i < tr->n; i++) {
        const sim_req_t *q = &tr->reqs[i];

        ttft[i] = q->ttft;
        sum += q->ttft;
        in_slo += q->ttft <= sim->opts->slo_ttft_s;
        blocks += q->n_keys;
        loaded += q->loaded;
        cached += q->plan.cached;
        remote += q->loaded > q->plan.local ? q->loaded - q->plan.local : 0;
        tokens += q->prompt;
        hit_tokens += KV_MIN((uint64_t)q->loaded * bt, (uint64_t)q->prompt);
        dec += q->finish - q->decode_start;
        if (q->output > 0) {
            tbt += (q->finish - q->decode_start) / q->output;
            tbt_n++;
        }
        res->makespan = KV_MAX(res->makespan, q->finish);
    }
    qsort(ttft, tr->n, sizeof(*ttft), cmp_double);
    res->ttft_mean       = sum / (double)tr->n;
    res->ttft_p50        = ttft[(tr->n - 1) / 2];
    res->ttft_p99        = ttft[(size_t)((double)(tr->n - 1) * 0.99)];
    res->tbt_mean        = tbt_n > 0 ? tbt / (double)tbt_n : 0;
    res->decode_mean     = dec / (double)tr->n;
    res->hit_ratio       = blocks > 0 ? (double)loaded / (double)blocks : 0;
    res->cached_ratio    = blocks > 0 ? (double)cached / (double)blocks : 0;
    res->token_hit_ratio = tokens > 0 ? (double)hit_tokens / (double)tokens : 0;
    res->remote_share    = loaded > 0 ? (double)remote / (double)loaded : 0;
    res->slo             = (double)in_slo / (double)tr->n;
    res->min_served      = UINT64_MAX;
    for (uint32_t i = 0; i < sim->opts->prefill; i++) {
        res->max_served = KV_MAX(res->max_served, sim->pre[i].served);
        res->min_served = KV_MIN(res->min_served, sim->pre[i].served);
    }
    kv_free(ttft);
}

static void sim_cleanup(sim_t *sim)
{
    for (uint32_t i = 0; sim->pre != NULL && i < sim->opts->prefill; i++) {
        kv_cache_model_destroy(sim->pre[i].cache);
        kv_free(sim->pre[i].queue.items);
    }
    for (uint32_t i = 0; sim->dec != NULL && i < sim->opts->decode; i++) {
        kv_free(sim->dec[i].waiting.items);
        kv_free(sim->dec[i].running);
    }
    kv_free(sim->pre);
    kv_free(sim->dec);
    kv_free(sim->heap);
    kv_sched_destroy(sim->sched);
    kv_index_destroy(sim->index);
}

/* Set up the instances: prefill i is scheduler id i + 1 on pool node i + 1. */
static kvp_status_t sim_setup(sim_t *sim, kv_sched_policy_t policy)
{
    const sim_opts_t *o = sim->opts;
    kvp_status_t      status;

    status = kv_index_create(o->capacity_blocks * o->prefill, &sim->index);
    if (status == KVP_OK) {
        status = kv_index_ns_id(sim->index, "simulate", 8, 1, &sim->ns);
    }
    if (status == KVP_OK) {
        status = kv_sched_create(policy, &o->cost, o->seed, &sim->sched);
    }
    sim->pre = kv_calloc(o->prefill, sizeof(*sim->pre), "sim prefill");
    sim->dec = kv_calloc(o->decode, sizeof(*sim->dec), "sim decode");
    for (uint32_t i = 0; status == KVP_OK && i < o->prefill; i++) {
        kv_sched_instance_t in = {i + 1, KV_SCHED_PREFILL, i + 1, o->decode_blocks};

        sim->pre[i].id = in.id;
        status = kv_cache_model_create(sim->index, sim->ns, KV_LOC(i + 1, 0), o->eviction,
                                       o->capacity_blocks, &sim->pre[i].cache);
        if (status == KVP_OK) {
            status = kv_sched_add(sim->sched, &in);
        }
    }
    for (uint32_t i = 0; status == KVP_OK && i < o->decode; i++) {
        kv_sched_instance_t in = {o->prefill + i + 1, KV_SCHED_DECODE, 0,
                                  o->decode_blocks};

        sim->dec[i].id          = in.id;
        sim->dec[i].free_blocks = o->decode_blocks;
        status                  = kv_sched_add(sim->sched, &in);
    }
    return status;
}

static int sim_run(const sim_opts_t *opts, sim_trace_t *trace, kv_sched_policy_t policy,
                   sim_result_t *res)
{
    sim_t    sim   = {0};
    uint64_t start = kv_time_ns();
    int      ok    = 0;

    sim.opts  = opts;
    sim.trace = trace;
    memset(res, 0, sizeof(*res));
    if (sim_setup(&sim, policy) != KVP_OK) {
        fprintf(stderr, "kvpool simulate: cannot set up the instances\n");
        goto out;
    }
    for (size_t i = 0; i < trace->n; i++) {
        push_event(&sim, trace->reqs[i].arrival, EV_ARRIVE, 0, (uint32_t)i, 0);
    }
    while (sim.n_heap > 0) {
        sim_event_t ev = pop_event(&sim);

        sim.now = ev.t;
        switch (ev.type) {
        case EV_ARRIVE:
            on_arrive(&sim, ev.req);
            break;
        case EV_PREFILL_DONE:
            on_prefill_done(&sim, ev.target, ev.req);
            break;
        case EV_DECODE_ARRIVE:
            on_decode_arrive(&sim, ev.target, ev.req);
            break;
        default:
            on_decode_step(&sim, ev.target, ev.gen);
            break;
        }
    }
    summarise(&sim, res);
    res->wall = (double)(kv_time_ns() - start) / 1e9;
    ok        = 1;
out:
    sim_cleanup(&sim);
    return ok;
}

/* ---- output -------------------------------------------------------------- */

static void print_result(const sim_opts_t *o, const sim_trace_t *tr,
                         kv_sched_policy_t policy, const sim_result_t *r)
{
    const char *const *keys = kv_sched_cost_keys();

    if (!o->json) {
        printf("%-18s requests %zu  TTFT mean %.3f s p50 %.3f p99 %.3f  "
               "TBT %.4f s  hit %.4f (cached %.4f)  SLO %.4f\n",
               kv_sched_policy_name(policy), tr->n, r->ttft_mean, r->ttft_p50,
               r->ttft_p99, r->tbt_mean, r->hit_ratio, r->cached_ratio, r->slo);
        fflush(stdout);
        return;
    }
    printf("{\"policy\":\"%s\",\"requests\":%zu,\"prefill\":%u,\"decode\":%u,"
           "\"ttft_mean_s\":%.6f,\"ttft_p50_s\":%.6f,\"ttft_p99_s\":%.6f,"
           "\"tbt_mean_s\":%.6f,\"decode_mean_s\":%.6f,\"hit_ratio\":%.6f,"
           "\"token_hit_ratio\":%.6f,\"cached_ratio\":%.6f,\"remote_share\":%.6f,"
           "\"slo_ttft_s\":%g,\"slo_attainment\":%.6f,\"makespan_s\":%.3f,"
           "\"requests_per_prefill_min\":%llu,\"requests_per_prefill_max\":%llu,"
           "\"capacity_blocks\":%llu,\"decode_blocks\":%llu,\"time_scale\":%g,"
           "\"seed\":%llu,\"eviction_policy\":\"%s\",\"wall_s\":%.3f,\"cost\":{",
           kv_sched_policy_name(policy), tr->n, o->prefill, o->decode, r->ttft_mean,
           r->ttft_p50, r->ttft_p99, r->tbt_mean, r->decode_mean, r->hit_ratio,
           r->token_hit_ratio, r->cached_ratio, r->remote_share, o->slo_ttft_s, r->slo,
           r->makespan, (unsigned long long)r->min_served,
           (unsigned long long)r->max_served, (unsigned long long)o->capacity_blocks,
           (unsigned long long)o->decode_blocks, o->time_scale,
           (unsigned long long)o->seed, o->eviction ? o->eviction : "lru", r->wall);
    for (size_t i = 0; keys[i] != NULL; i++) {
        printf("%s\"%s\":%g", i > 0 ? "," : "", keys[i],
               kv_sched_cost_get(&o->cost, keys[i]));
    }
    printf("}}\n");
    fflush(stdout);
}

/* ---- the command --------------------------------------------------------- */

static void usage(FILE *out)
{
    const char *const *names = kv_sched_policy_names();
    const char *const *keys  = kv_sched_cost_keys();

    fprintf(
        out,
        "usage: kvpool simulate TRACE [--prefill N] [--decode M] [--policy NAME|all]\n"
        "                       [--capacity-blocks C] [--decode-blocks D] [--seed S]\n"
        "                       [--time-scale X] [--slo-ttft SECONDS]\n"
        "                       [--eviction-policy P] [--cost KEY=VALUE]...\n"
        "                       [--requests N] [--json]\n"
        "Policies (several with commas, or all):");
    for (size_t i = 0; names[i] != NULL; i++) {
        fprintf(out, " %s", names[i]);
    }
    fprintf(out, "\nCost keys:");
    for (size_t i = 0; keys[i] != NULL; i++) {
        fprintf(out, " %s", keys[i]);
    }
    fprintf(out, "\n");
}

static int parse_positive(const char *flag, const char *text, double *out)
{
    char  *end;
    double v = strtod(text, &end);

    if (end == text || *end != '\0' || !isfinite(v) || v <= 0 || v > 1e9) {
        fprintf(stderr, "kvpool simulate: %s must be a number > 0, not '%s'\n", flag,
                text);
        return 0;
    }
    *out = v;
    return 1;
}

static int parse_policies(const char *text, int *chosen)
{
    char  buf[256];
    char *save = NULL;

    if (strlen(text) >= sizeof(buf)) {
        fprintf(stderr, "kvpool simulate: --policy is too long\n");
        return 0;
    }
    snprintf(buf, sizeof(buf), "%s", text);
    memset(chosen, 0, KV_SCHED_POLICY_COUNT * sizeof(*chosen));
    for (char *name = strtok_r(buf, ",", &save); name != NULL;
         name       = strtok_r(NULL, ",", &save)) {
        kv_sched_policy_t p;

        if (strcmp(name, "all") == 0) {
            for (int i = 0; i < KV_SCHED_POLICY_COUNT; i++) {
                chosen[i] = 1;
            }
        } else if (kv_sched_policy_parse(name, &p) == KVP_OK) {
            chosen[p] = 1;
        } else {
            fprintf(stderr, "kvpool simulate: unknown policy '%s'\n", name);
            usage(stderr);
            return 0;
        }
    }
    return 1;
}

static int parse_cost(const char *text, kv_sched_cost_t *cost)
{
    const char *eq = strchr(text, '=');
    char        key[64], err[256];

    if (eq == NULL || (size_t)(eq - text) >= sizeof(key)) {
        fprintf(stderr, "kvpool simulate: --cost takes KEY=VALUE, not '%s'\n", text);
        return 0;
    }
    memcpy(key, text, (size_t)(eq - text));
    key[eq - text] = '\0';
    if (kv_sched_cost_set(cost, key, eq + 1, err, sizeof(err)) != KVP_OK) {
        fprintf(stderr, "kvpool simulate: --cost: %s\n", err);
        return 0;
    }
    return 1;
}

int kv_cli_simulate(int argc, char **argv)
{
    static const struct option options[] = {
        {"prefill", required_argument, NULL, 'p'},
        {"decode", required_argument, NULL, 'd'},
        {"policy", required_argument, NULL, 'P'},
        {"capacity-blocks", required_argument, NULL, 'c'},
        {"decode-blocks", required_argument, NULL, 'D'},
        {"seed", required_argument, NULL, 's'},
        {"time-scale", required_argument, NULL, 'x'},
        {"slo-ttft", required_argument, NULL, 'S'},
        {"eviction-policy", required_argument, NULL, 'e'},
        {"cost", required_argument, NULL, 'C'},
        {"requests", required_argument, NULL, 'r'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    sim_opts_t  o = {0};
    sim_trace_t trace;
    uint64_t    v;
    int         opt, rc = 0;

    o.prefill                           = 8;
    o.decode                            = 8;
    o.capacity_blocks                   = SIM_DEFAULT_CAPACITY_BLOCKS;
    o.decode_blocks                     = SIM_DEFAULT_DECODE_BLOCKS;
    o.seed                              = 1;
    o.time_scale                        = 1;
    o.slo_ttft_s                        = SIM_DEFAULT_SLO_TTFT_S;
    o.policies[KV_SCHED_DEFAULT_POLICY] = 1;
    kv_sched_cost_defaults(&o.cost);
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case 'p':
            if (!kv_cli_parse_u64("simulate", "--prefill", optarg, 1, SIM_INSTANCES_MAX,
                                  &v)) {
                return 2;
            }
            o.prefill = (uint32_t)v;
            break;
        case 'd':
            if (!kv_cli_parse_u64("simulate", "--decode", optarg, 1, SIM_INSTANCES_MAX,
                                  &v)) {
                return 2;
            }
            o.decode = (uint32_t)v;
            break;
        case 'P':
            if (!parse_policies(optarg, o.policies)) {
                return 2;
            }
            break;
        case 'c':
            if (!kv_cli_parse_u64("simulate", "--capacity-blocks", optarg, 0, 1ull << 32,
                                  &o.capacity_blocks)) {
                return 2;
            }
            break;
        case 'D':
            if (!kv_cli_parse_u64("simulate", "--decode-blocks", optarg, 1, 1ull << 32,
                                  &o.decode_blocks)) {
                return 2;
            }
            break;
        case 's':
            if (!kv_cli_parse_u64("simulate", "--seed", optarg, 0, UINT64_MAX, &o.seed)) {
                return 2;
            }
            break;
        case 'x':
            if (!parse_positive("--time-scale", optarg, &o.time_scale)) {
                return 2;
            }
            break;
        case 'S':
            if (!parse_positive("--slo-ttft", optarg, &o.slo_ttft_s)) {
                return 2;
            }
            break;
        case 'e':
            if (!kv_evict_policy_known(optarg)) {
                fprintf(stderr, "kvpool simulate: unknown eviction policy '%s'\n",
                        optarg);
                return 2;
            }
            o.eviction = optarg;
            break;
        case 'C':
            if (!parse_cost(optarg, &o.cost)) {
                return 2;
            }
            break;
        case 'r':
            if (!kv_cli_parse_u64("simulate", "--requests", optarg, 1, SIM_REQUESTS_MAX,
                                  &o.max_requests)) {
                return 2;
            }
            break;
        case 'j':
            o.json = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind + 1 != argc) {
        fprintf(stderr, "kvpool simulate: %s\n",
                optind == argc ? "name a trace file" : "one trace file only");
        usage(stderr);
        return 2;
    }
    o.trace = argv[optind];
    if (!load_trace(&o, &trace)) {
        return 1;
    }
    if (!o.json) {
        printf("%zu requests, %u prefill + %u decode instances, %llu cache blocks per "
               "prefill instance, time scale %g\n",
               trace.n, o.prefill, o.decode, (unsigned long long)o.capacity_blocks,
               o.time_scale);
    }
    for (int p = 0; p < KV_SCHED_POLICY_COUNT && rc == 0; p++) {
        sim_result_t res;

        if (!o.policies[p]) {
            continue;
        }
        if (!sim_run(&o, &trace, (kv_sched_policy_t)p, &res)) {
            rc = 1;
            break;
        }
        print_result(&o, &trace, (kv_sched_policy_t)p, &res);
    }
    kv_free(trace.reqs);
    kv_free(trace.keys);
    return rc;
}
