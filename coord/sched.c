/*
 * The prefill/decode scheduler (<kvcoord/sched.h>): the instance table,
 * the cost model and the policies.
 *
 * Instances live in a dense array (the order decisions scan them in) with
 * an id -> slot map.  Each keeps its last load report plus what the
 * scheduler sent it since (pending_*), so back-to-back decisions between
 * two reports do not all pick the same idle instance.
 *
 * Ties (equal estimates: idle instances, equal queues) go to the instance
 * chosen least recently, so that they spread over the instances instead
 * of piling on one; round-robin is exactly that rule with every estimate
 * equal.  Decisions depend only on the calls made (deterministic).
 */
#include <kvcoord/sched.h>

#include <kv/alloc.h>
#include <kv/util.h>

#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct sched_instance {
    kv_sched_instance_t info;
    kv_sched_load_t     load;            /* last report */
    double              pending_s;       /* prefill work sent since */
    uint64_t            pending_blocks;  /* decode KV blocks sent since */
    uint32_t            pending_running; /* decode requests sent since */
    uint64_t            prefill_at;      /* decision that last chose it, for */
    uint64_t            decode_at;       /* prefill and decode: 0 never */
} sched_instance_t;

struct kv_sched {
    kv_sched_policy_t policy;
    kv_sched_cost_t   cost;
    uint64_t          rng;
    uint64_t          decisions;
    sched_instance_t *inst; /* dense, n of them */
    size_t            n, cap;
    uint16_t         *slot_of; /* id -> slot + 1; 0: not registered */
    /* per-decision scratch, grown as needed */
    uint32_t            *counts;     /* locations of each matched block */
    size_t              *offsets;    /* where each one's locations start in locs */
    size_t               counts_cap; /* of counts and offsets */
    uint32_t            *locs;
    size_t               locs_cap;
    kv_index_node_run_t *runs;
    size_t               runs_cap;
};

static const char *const policy_names[] = {
    "cache-aware", "local-cache-aware", "load", "round-robin", "random", NULL,
};

void kv_sched_cost_defaults(kv_sched_cost_t *cost)
{
    /*
     * A LLaMA-2-70B-class model (80 layers, d_model 8192, 8 KV heads of
     * 128, fp16) on 8 A100-80G at about half of their 312 TFLOP/s:
     * 2 x 70e9 FLOP per token / 1.25e15 FLOP/s = 112 us per token; causal
     * attention adds 4 x 80 x 8192 FLOP per (token, earlier token) pair
     * = 2.1 ns per pair; KV of a token: 2 x 80 x 8 x 128 x 2 bytes.
     */
    memset(cost, 0, sizeof(*cost));
    cost->block_tokens              = 512;
    cost->prefill_fixed_s           = 0.020;
    cost->prefill_token_s           = 112e-6;
    cost->prefill_attn_s            = 2.1e-9;
    cost->kv_bytes_per_token        = 327680;
    cost->local_bytes_s             = 50e9; /* PCIe 5 x16, host -> GPU */
    cost->remote_bytes_s            = 25e9; /* a 200 Gb/s RDMA NIC */
    cost->ssd_bytes_s               = 6e9;  /* a PCIe 4 NVMe SSD's reads */
    cost->decode_step_s             = 0.025;
    cost->decode_step_per_request_s = 0.0004;
}

static int finite_nonneg(double v)
{
    return isfinite(v) && v >= 0;
}

int kv_sched_cost_valid(const kv_sched_cost_t *cost)
{
    return cost != NULL && cost->block_tokens >= 1 && cost->block_tokens <= 65536 &&
           finite_nonneg(cost->prefill_fixed_s) && finite_nonneg(cost->prefill_token_s) &&
           finite_nonneg(cost->prefill_attn_s) &&
           finite_nonneg(cost->kv_bytes_per_token) &&
           finite_nonneg(cost->local_bytes_s) && cost->local_bytes_s > 0 &&
           finite_nonneg(cost->remote_bytes_s) && cost->remote_bytes_s > 0 &&
           finite_nonneg(cost->ssd_bytes_s) && cost->ssd_bytes_s > 0 &&
           finite_nonneg(cost->decode_step_s) &&
           finite_nonneg(cost->decode_step_per_request_s);
}

/* The figures by name: offsets of the doubles of kv_sched_cost_t. */
static const struct {
    const char *key;
    size_t      offset;
    int         positive; /* must be > 0, not only >= 0 */
} cost_fields[] = {
    {"prefill_fixed_s", offsetof(kv_sched_cost_t, prefill_fixed_s), 0},
    {"prefill_token_s", offsetof(kv_sched_cost_t, prefill_token_s), 0},
    {"prefill_attn_s", offsetof(kv_sched_cost_t, prefill_attn_s), 0},
    {"kv_bytes_per_token", offsetof(kv_sched_cost_t, kv_bytes_per_token), 0},
    {"local_bytes_s", offsetof(kv_sched_cost_t, local_bytes_s), 1},
    {"remote_bytes_s", offsetof(kv_sched_cost_t, remote_bytes_s), 1},
    {"ssd_bytes_s", offsetof(kv_sched_cost_t, ssd_bytes_s), 1},
    {"decode_step_s", offsetof(kv_sched_cost_t, decode_step_s), 0},
    {"decode_step_per_request_s", offsetof(kv_sched_cost_t, decode_step_per_request_s),
     0},
};

static const char *const cost_keys[] = {
    "block_tokens",
    "prefill_fixed_s",
    "prefill_token_s",
    "prefill_attn_s",
    "kv_bytes_per_token",
    "local_bytes_s",
    "remote_bytes_s",
    "ssd_bytes_s",
    "decode_step_s",
    "decode_step_per_request_s",
    NULL,
};

const char *const *kv_sched_cost_keys(void)
{
    return cost_keys;
}

kvp_status_t kv_sched_cost_set(kv_sched_cost_t *cost, const char *key, const char *value,
                               char *err, size_t err_len)
{
    char  *end;
    double v;

    errno = 0;
    v     = strtod(value, &end);
    if (strcmp(key, "block_tokens") == 0) {
        if (end == value || *end != '\0' || errno != 0 || !(v >= 1 && v <= 65536) ||
            v != (double)(uint32_t)v) {
            snprintf(err, err_len,
                     "block_tokens must be a whole number of 1..65536, "
                     "not '%s'",
                     value);
            return KVP_ERR_CONFIG;
        }
        cost->block_tokens = (uint32_t)v;
        return KVP_OK;
    }
    for (size_t i = 0; i < sizeof(cost_fields) / sizeof(cost_fields[0]); i++) {
        if (strcmp(key, cost_fields[i].key) != 0) {
            continue;
        }
        if (end == value || *end != '\0' || errno != 0 || !isfinite(v) || v < 0 ||
            v >= 1e15 || (cost_fields[i].positive && v == 0)) {
            snprintf(err, err_len, "%s must be a number %s 0 and below 1e15, not '%s'",
                     key, cost_fields[i].positive ? ">" : ">=", value);
            return KVP_ERR_CONFIG;
        }
        *(double *)((char *)cost + cost_fields[i].offset) = v;
        return KVP_OK;
    }
    snprintf(err, err_len, "no cost figure '%s'", key);
    return KVP_ERR_NOT_FOUND;
}

double kv_sched_cost_get(const kv_sched_cost_t *cost, const char *key)
{
    if (strcmp(key, "block_tokens") == 0) {
        return cost->block_tokens;
    }
    for (size_t i = 0; i < sizeof(cost_fields) / sizeof(cost_fields[0]); i++) {
        if (strcmp(key, cost_fields[i].key) == 0) {
            return *(const double *)((const char *)cost + cost_fields[i].offset);
        }
    }
    return NAN;
}

double kv_sched_prefill_s(const kv_sched_cost_t *cost, uint64_t cached_tokens,
                          uint64_t prompt_tokens)
{
    double p = (double)prompt_tokens;
    double c = (double)KV_MIN(cached_tokens, prompt_tokens);

    return cost->prefill_fixed_s + cost->prefill_token_s * (p - c) +
           cost->prefill_attn_s * (p * p - c * c) / 2;
}

double kv_sched_transfer_s(const kv_sched_cost_t *cost, uint64_t blocks, double bytes_s)
{
    return (double)blocks * cost->block_tokens * cost->kv_bytes_per_token / bytes_s;
}

double kv_sched_decode_step_s(const kv_sched_cost_t *cost, uint32_t running)
{
    return cost->decode_step_s + cost->decode_step_per_request_s * (double)running;
}

const char *const *kv_sched_policy_names(void)
{
    return policy_names;
}

const char *kv_sched_policy_name(kv_sched_policy_t policy)
{
    return (unsigned)policy < KV_SCHED_POLICY_COUNT ? policy_names[policy] : "?";
}

kvp_status_t kv_sched_policy_parse(const char *name, kv_sched_policy_t *policy_p)
{
    for (int i = 0; name != NULL && i < KV_SCHED_POLICY_COUNT; i++) {
        if (strcmp(name, policy_names[i]) == 0) {
            *policy_p = (kv_sched_policy_t)i;
            return KVP_OK;
        }
    }
    return KVP_ERR_NOT_FOUND;
}

kvp_status_t kv_sched_create(kv_sched_policy_t policy, const kv_sched_cost_t *cost,
                             uint64_t seed, kv_sched_t **sched_p)
{
    kv_sched_t *sched;

    if (sched_p == NULL || (unsigned)policy >= KV_SCHED_POLICY_COUNT ||
        !kv_sched_cost_valid(cost)) {
        return KVP_ERR_INVALID_PARAM;
    }
    sched         = kv_calloc(1, sizeof(*sched), "scheduler");
    sched->policy = policy;
    sched->cost   = *cost;
    sched->rng    = seed;
    sched->slot_of =
        kv_calloc(KV_SCHED_INSTANCE_MAX + 1, sizeof(*sched->slot_of), "scheduler slots");
    *sched_p = sched;
    return KVP_OK;
}

void kv_sched_destroy(kv_sched_t *sched)
{
    if (sched == NULL) {
        return;
    }
    kv_free(sched->inst);
    kv_free(sched->slot_of);
    kv_free(sched->counts);
    kv_free(sched->offsets);
    kv_free(sched->locs);
    kv_free(sched->runs);
    kv_free(sched);
}

kv_sched_policy_t kv_sched_policy(const kv_sched_t *sched)
{
    return sched->policy;
}

const kv_sched_cost_t *kv_sched_cost(const kv_sched_t *sched)
{
    return &sched->cost;
}

static sched_instance_t *find(const kv_sched_t *sched, uint32_t id)
{
    if (id == 0 || id > KV_SCHED_INSTANCE_MAX || sched->slot_of[id] == 0) {
        return NULL;
    }
    return &sched->inst[sched->slot_of[id] - 1];
}

kvp_status_t kv_sched_add(kv_sched_t *sched, const kv_sched_instance_t *instance)
{
    sched_instance_t *in;

    if (instance == NULL || instance->id == 0 || instance->id > KV_SCHED_INSTANCE_MAX ||
        find(sched, instance->id) != NULL || (instance->roles & KV_SCHED_BOTH) == 0 ||
        (instance->roles & ~(uint32_t)KV_SCHED_BOTH) != 0 ||
        instance->capacity_blocks == 0 || instance->node > KV_COORD_NODE_MAX) {
        return KVP_ERR_INVALID_PARAM;
    }
    if (sched->n == sched->cap) {
        sched->cap  = sched->cap ? 2 * sched->cap : 16;
        sched->inst = kv_realloc(sched->inst, sched->cap * sizeof(*sched->inst),
                                 "scheduler instances");
    }
    in = &sched->inst[sched->n];
    memset(in, 0, sizeof(*in));
    in->info                     = *instance;
    in->load.free_blocks         = instance->capacity_blocks;
    sched->slot_of[instance->id] = (uint16_t)++sched->n;
    return KVP_OK;
}

kvp_status_t kv_sched_remove(kv_sched_t *sched, uint32_t id)
{
    sched_instance_t *in = find(sched, id);
    size_t            slot;

    if (in == NULL) {
        return KVP_ERR_NOT_FOUND;
    }
    slot               = (size_t)(in - sched->inst);
    sched->slot_of[id] = 0;
    if (slot + 1 < sched->n) {
        /* keep the scan order of the others: shift, not swap */
        memmove(in, in + 1, (sched->n - slot - 1) * sizeof(*in));
        for (size_t i = slot; i < sched->n - 1; i++) {
            sched->slot_of[sched->inst[i].info.id] = (uint16_t)(i + 1);
        }
    }
    sched->n--;
    return KVP_OK;
}

kvp_status_t kv_sched_set_node(kv_sched_t *sched, uint32_t id, uint32_t node)
{
    sched_instance_t *in = find(sched, id);

    if (in == NULL || node > KV_COORD_NODE_MAX) {
        return in == NULL ? KVP_ERR_NOT_FOUND : KVP_ERR_INVALID_PARAM;
    }
    in->info.node = node;
    return KVP_OK;
}

kvp_status_t kv_sched_report(kv_sched_t *sched, uint32_t id, const kv_sched_load_t *load)
{
    sched_instance_t *in = find(sched, id);

    if (in == NULL || load == NULL) {
        return KVP_ERR_NOT_FOUND;
    }
    in->load            = *load;
    in->pending_s       = 0;
    in->pending_blocks  = 0;
    in->pending_running = 0;
    return KVP_OK;
}

size_t kv_sched_count(const kv_sched_t *sched, uint32_t roles)
{
    size_t n = 0;

    for (size_t i = 0; i < sched->n; i++) {
        n += (sched->inst[i].info.roles & roles) != 0;
    }
    return n;
}

static uint64_t free_blocks(const sched_instance_t *in)
{
    return in->load.free_blocks > in->pending_blocks
               ? in->load.free_blocks - in->pending_blocks
               : 0;
}

kvp_status_t kv_sched_get(const kv_sched_t *sched, uint32_t id,
                          kv_sched_instance_t *instance_p, kv_sched_load_t *load_p)
{
    const sched_instance_t *in = find(sched, id);

    if (in == NULL) {
        return KVP_ERR_NOT_FOUND;
    }
    if (instance_p != NULL) {
        *instance_p = in->info;
    }
    if (load_p != NULL) {
        load_p->queued_tokens = in->load.queued_tokens;
        load_p->running       = in->load.running + in->pending_running;
        load_p->free_blocks   = free_blocks(in);
    }
    return KVP_OK;
}

/* ---- a decision ---------------------------------------------------------- */

/* What a decision knows about the request's chain in the index. */
typedef struct chain_view {
    size_t matched; /* longest cached prefix, blocks */
    size_t n_runs;  /* sched->runs[0..n_runs): each node's prefix */
    int    any_ssd; /* some location of the prefix is on an SSD tier */
} chain_view_t;

static void *grow(void *mem, size_t *cap, size_t need, size_t elem, const char *what)
{
    if (need <= *cap) {
        return mem;
    }
    *cap = KV_MAX(need, 2 * *cap);
    return kv_realloc(mem, *cap * elem, what);
}

/* Match the chain and gather every matched block's locations. */
static void view_chain(kv_sched_t *sched, const kv_prefix_index_t *index,
                       const kv_sched_request_t *req, chain_view_t *view)
{
    size_t total, cap;

    view->matched = 0;
    view->n_runs  = 0;
    view->any_ssd = 0;
    if (index == NULL || req->count == 0) {
        return;
    }
    view->matched = kv_index_match(index, req->ns_id, req->keys, req->count);
    if (view->matched == 0) {
        return;
    }
    if (view->matched > sched->counts_cap) {
        sched->counts_cap = KV_MAX(view->matched, 2 * sched->counts_cap);
        sched->counts =
            kv_realloc(sched->counts, sched->counts_cap * sizeof(*sched->counts),
                       "scheduler counts");
        sched->offsets =
            kv_realloc(sched->offsets, sched->counts_cap * sizeof(*sched->offsets),
                       "scheduler offsets");
    }
    sched->locs = grow(sched->locs, &sched->locs_cap, 2 * view->matched,
                       sizeof(*sched->locs), "scheduler locations");
    cap         = sched->locs_cap;
    total       = kv_index_chain_locations(index, req->ns_id, req->keys, view->matched,
                                           sched->counts, sched->locs, cap);
    if (total > cap) {
        sched->locs = grow(sched->locs, &sched->locs_cap, total, sizeof(*sched->locs),
                           "scheduler locations");
        kv_index_chain_locations(index, req->ns_id, req->keys, view->matched,
                                 sched->counts, sched->locs, total);
    }
    for (size_t i = 0, off = 0; i < view->matched; off += sched->counts[i++]) {
        sched->offsets[i] = off;
    }
    for (size_t j = 0; j < total && !view->any_ssd; j++) {
        view->any_ssd = KV_LOC_TIER(sched->locs[j]) == KVP_TIER_SSD;
    }
    sched->runs  = grow(sched->runs, &sched->runs_cap, sched->counts[0],
                        sizeof(*sched->runs), "scheduler runs");
    view->n_runs = kv_index_node_prefixes(sched->counts, sched->locs, view->matched,
                                          sched->runs, sched->counts[0]);
}

/* The prefix (blocks) that pool node @p node holds of the matched chain. */
static size_t node_prefix(const kv_sched_t *sched, const chain_view_t *view,
                          uint32_t node)
{
    for (size_t k = 0; node != 0 && k < view->n_runs; k++) {
        if (sched->runs[k].node == node) {
            return sched->runs[k].length;
        }
    }
    return 0;
}

/* How many of the first @p len blocks pool node @p node holds only on SSD. */
static size_t node_ssd_blocks(const kv_sched_t *sched, const chain_view_t *view,
                              uint32_t node, size_t len)
{
    size_t n = 0;

    for (size_t i = 0; view->any_ssd && i < len; i++) {
        const uint32_t *locs = sched->locs + sched->offsets[i];
        int             ssd = 0, host = 0;

        for (uint32_t j = 0; j < sched->counts[i]; j++) {
            if (KV_LOC_NODE(locs[j]) == node) {
                ssd |= KV_LOC_TIER(locs[j]) == KVP_TIER_SSD;
                host |= KV_LOC_TIER(locs[j]) != KVP_TIER_SSD;
            }
        }
        n += ssd && !host;
    }
    return n;
}

static uint64_t cached_tokens(const kv_sched_cost_t *cost, size_t blocks, uint64_t prompt)
{
    return KV_MIN((uint64_t)blocks * cost->block_tokens, prompt);
}

/* Queued prefill work of an instance, in seconds. */
static double queue_s(const kv_sched_t *sched, const sched_instance_t *in)
{
    return sched->cost.prefill_token_s * (double)in->load.queued_tokens + in->pending_s;
}

/* A prefill option: use @p load leading blocks, @p local of them local. */
typedef struct option {
    size_t load;
    double transfer_s;
    double prefill_s;
} option_t;

/* @p local_ssd of the @p local blocks are on the co-located node's SSD. */
static option_t option(const kv_sched_cost_t *cost, const kv_sched_request_t *req,
                       size_t local, size_t local_ssd, size_t load)
{
    option_t o;

    o.load       = load;
    o.transfer_s = kv_sched_transfer_s(cost, local - local_ssd, cost->local_bytes_s) +
                   kv_sched_transfer_s(cost, local_ssd,
                                       KV_MIN(cost->ssd_bytes_s, cost->local_bytes_s)) +
                   kv_sched_transfer_s(cost, load - local, cost->remote_bytes_s);
    o.prefill_s = kv_sched_prefill_s(cost, cached_tokens(cost, load, req->prompt_tokens),
                                     req->prompt_tokens);
    return o;
}

/* The best option of an instance holding @p local blocks, by the policy. */
static option_t best_option(const kv_sched_t *sched, const kv_sched_request_t *req,
                            const chain_view_t *view, uint32_t node)
{
    size_t   local = node_prefix(sched, view, node);
    size_t   ssd   = node_ssd_blocks(sched, view, node, local);
    option_t own   = option(&sched->cost, req, local, ssd, local);
    option_t all;

    if (sched->policy != KV_SCHED_CACHE_AWARE || view->matched <= local) {
        return own;
    }
    all = option(&sched->cost, req, local, ssd, view->matched);
    return all.transfer_s + all.prefill_s < own.transfer_s + own.prefill_s ? all : own;
}

static uint64_t next_random(kv_sched_t *sched)
{
    /* splitmix64 */
    uint64_t z = (sched->rng += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* The prefill instance, by the policy; NULL if there is none. */
static sched_instance_t *choose_prefill(kv_sched_t *sched, const kv_sched_request_t *req,
                                        const chain_view_t *view, option_t *opt_p)
{
    sched_instance_t *best      = NULL;
    double            best_cost = 0;
    size_t            n = kv_sched_count(sched, KV_SCHED_PREFILL), pick = 0;

    if (n == 0) {
        return NULL;
    }
    if (sched->policy == KV_SCHED_RANDOM) {
        pick = (size_t)(next_random(sched) % n);
    }
    for (size_t i = 0, seen = 0; i < sched->n; i++) {
        sched_instance_t *in = &sched->inst[i];
        double            c;
        option_t          o;

        if (!(in->info.roles & KV_SCHED_PREFILL)) {
            continue;
        }
        o = best_option(sched, req, view, in->info.node);
        switch (sched->policy) {
        case KV_SCHED_ROUND_ROBIN:
            c = 0; /* the tie rule picks the least recently chosen */
            break;
        case KV_SCHED_RANDOM:
            c = seen == pick ? 0 : 1;
            break;
        case KV_SCHED_LOAD:
            c = queue_s(sched, in);
            break;
        default:
            c = queue_s(sched, in) + o.transfer_s + o.prefill_s;
            break;
        }
        seen++;
        if (best == NULL || c < best_cost ||
            (c == best_cost && in->prefill_at < best->prefill_at)) {
            best      = in;
            best_cost = c;
            *opt_p    = o;
        }
    }
    return best;
}

/* The decode instance: least busy with room, else most room. */
static sched_instance_t *choose_decode(kv_sched_t *sched, uint64_t need)
{
    sched_instance_t *fit = NULL, *roomiest = NULL;
    uint32_t          fit_busy = 0;

    for (size_t i = 0; i < sched->n; i++) {
        sched_instance_t *in   = &sched->inst[i];
        uint64_t          room = free_blocks(in);
        uint32_t          busy = in->load.running + in->pending_running;

        if (!(in->info.roles & KV_SCHED_DECODE)) {
            continue;
        }
        if (room >= need && (fit == NULL || busy < fit_busy ||
                             (busy == fit_busy && in->decode_at < fit->decode_at))) {
            fit      = in;
            fit_busy = busy;
        }
        if (roomiest == NULL || room > free_blocks(roomiest) ||
            (room == free_blocks(roomiest) && in->decode_at < roomiest->decode_at)) {
            roomiest = in;
        }
    }
    return fit != NULL ? fit : roomiest;
}

/* The longest run of @p node from block @p first on (at most @p end). */
static size_t run_length(const kv_sched_t *sched, size_t first, size_t end, uint32_t node)
{
    size_t i = first;

    for (; i < end; i++) {
        const uint32_t *locs = sched->locs + sched->offsets[i];
        size_t          j    = 0;

        while (j < sched->counts[i] && KV_LOC_NODE(locs[j]) != node) {
            j++;
        }
        if (j == sched->counts[i]) {
            break;
        }
    }
    return i - first;
}

/*
 * The load list: the instance's own prefix from its node, then, block
 * after block, the node with the longest run from there.  Cuts plan->load
 * where KV_SCHED_RUNS_MAX runs end.
 */
static void plan_runs(const kv_sched_t *sched, uint32_t own_node, size_t local,
                      kv_sched_plan_t *plan)
{
    size_t pos = 0;

    plan->n_runs = 0;
    if (local > 0) {
        plan->runs[plan->n_runs++] = (kv_sched_run_t){0, (uint32_t)local, own_node};
        pos                        = local;
    }
    while (pos < plan->load && plan->n_runs < KV_SCHED_RUNS_MAX) {
        const uint32_t *locs      = sched->locs + sched->offsets[pos];
        size_t          best_len  = 0;
        uint32_t        best_node = 0;

        for (size_t j = 0; j < sched->counts[pos]; j++) {
            uint32_t node = KV_LOC_NODE(locs[j]);
            size_t   len  = run_length(sched, pos, plan->load, node);

            if (len > best_len) {
                best_len  = len;
                best_node = node;
            }
        }
        plan->runs[plan->n_runs++] =
            (kv_sched_run_t){(uint32_t)pos, (uint32_t)best_len, best_node};
        pos += best_len;
    }
    plan->load = (uint32_t)pos;
}

kvp_status_t kv_sched_schedule(kv_sched_t *sched, const kv_prefix_index_t *index,
                               const kv_sched_request_t *req, kv_sched_plan_t *plan_p)
{
    const kv_sched_cost_t *cost = &sched->cost;
    sched_instance_t      *prefill, *decode;
    kv_sched_plan_t        plan;
    chain_view_t           view;
    option_t               opt = {0};
    uint64_t               need;

    if (req == NULL || plan_p == NULL || (req->keys == NULL && req->count > 0) ||
        req->count > KV_INDEX_MAX_CHAIN || req->prompt_tokens == 0 ||
        req->prompt_tokens > KV_SCHED_PROMPT_MAX ||
        req->output_tokens > KV_SCHED_OUTPUT_MAX) {
        return KVP_ERR_INVALID_PARAM;
    }
    if (kv_sched_count(sched, KV_SCHED_DECODE) == 0) {
        return KVP_ERR_NO_SPACE;
    }
    view_chain(sched, index, req, &view);
    prefill = choose_prefill(sched, req, &view, &opt);
    if (prefill == NULL) {
        return KVP_ERR_NO_SPACE;
    }
    need = (req->prompt_tokens + req->output_tokens + cost->block_tokens - 1) /
           cost->block_tokens;
    decode = choose_decode(sched, need);

    memset(&plan, 0, sizeof(plan));
    plan.prefill = prefill->info.id;
    plan.decode  = decode->info.id;
    plan.cached  = (uint32_t)view.matched;
    plan.local   = (uint32_t)node_prefix(sched, &view, prefill->info.node);
    plan.load    = (uint32_t)opt.load;
    plan_runs(sched, prefill->info.node, plan.local, &plan);
    if (plan.load != opt.load) {
        opt = option(cost, req, plan.local,
                     node_ssd_blocks(sched, &view, prefill->info.node, plan.local),
                     plan.load); /* runs ran out */
    }
    plan.save_node  = decode->info.node != 0 ? decode->info.node : prefill->info.node;
    plan.queue_s    = queue_s(sched, prefill);
    plan.transfer_s = opt.transfer_s;
    plan.prefill_s  = opt.prefill_s;
    plan.ttft_s     = plan.queue_s + plan.transfer_s + plan.prefill_s;

    prefill->pending_s += opt.transfer_s + opt.prefill_s;
    decode->pending_blocks += need;
    decode->pending_running++;
    prefill->prefill_at = decode->decode_at = ++sched->decisions;
    *plan_p                                 = plan;
    return KVP_OK;
}
