/*
 * Schedule: the scheduler's decision for one request (coord/sched.c,
 * docs/SCHEDULING.md), with the pool nodes the plan names so the engines
 * can reach them.
 */
#include "coord_int.h"

#include <string.h>

void kv_coord_handle_schedule(kv_rpc_call_t *call, const ProtobufCMessage *msg,
                              const void *payload, uint64_t payload_len, void *arg)
{
    const Kvpool__ScheduleRequest *req   = (const Kvpool__ScheduleRequest *)msg;
    kv_coord_t                    *coord = arg;
    Kvpool__ScheduleReply          reply = KVPOOL__SCHEDULE_REPLY__INIT;
    const kv_sched_cost_t         *cost  = kv_sched_cost(coord->sched);
    Kvpool__LoadRun                runs[KV_SCHED_RUNS_MAX], *run_ptrs[KV_SCHED_RUNS_MAX];
    Kvpool__NodeInfo               infos[KV_SCHED_RUNS_MAX + 2];
    Kvpool__NodeInfo              *info_ptrs[KV_SCHED_RUNS_MAX + 2];
    Kvpool__Tier                   tiers[(KV_SCHED_RUNS_MAX + 2) * KV_COORD_TIER_COUNT];
    uint32_t                       named[KV_SCHED_RUNS_MAX + 2];
    kv_sched_request_t             sreq = {0};
    kv_sched_plan_t                plan;
    const kv_prefix_index_t       *index = coord->index;
    kvp_key_t                     *keys;
    uint64_t                       max_keys;
    size_t                         n_named = 0;
    const char                    *missing;
    kvp_status_t                   status;

    if (!kv_coord_check_chain(call, &req->ns, req->keys, req->n_keys,
                              KV_INDEX_MAX_CHAIN)) {
        return;
    }
    if (req->prompt_tokens == 0 || req->prompt_tokens > KV_SCHED_PROMPT_MAX ||
        req->output_tokens > KV_SCHED_OUTPUT_MAX) {
        kv_rpc_reply_error(
            call, KVP_ERR_INVALID_PARAM,
            "prompt_tokens must be 1..%llu and output_tokens at most %llu, "
            "got %llu and %llu",
            (unsigned long long)KV_SCHED_PROMPT_MAX,
            (unsigned long long)KV_SCHED_OUTPUT_MAX,
            (unsigned long long)req->prompt_tokens,
            (unsigned long long)req->output_tokens);
        return;
    }
    max_keys = (req->prompt_tokens + cost->block_tokens - 1) / cost->block_tokens + 1;
    if (req->n_keys > max_keys) {
        kv_rpc_reply_error(
            call, KVP_ERR_INVALID_PARAM,
            "%zu keys for a prompt of %llu tokens (at most %llu blocks of %u)",
            req->n_keys, (unsigned long long)req->prompt_tokens,
            (unsigned long long)max_keys, cost->block_tokens);
        return;
    }
    missing = kv_sched_count(coord->sched, KV_SCHED_PREFILL) == 0  ? "prefill"
              : kv_sched_count(coord->sched, KV_SCHED_DECODE) == 0 ? "decode"
                                                                   : NULL;
    if (missing != NULL) {
        kv_rpc_reply_error(call, KVP_ERR_NO_SPACE, "no %s instance registered", missing);
        return;
    }
    if (kv_index_ns_id(coord->index, req->ns.data, req->ns.len, 0, &sreq.ns_id) !=
        KVP_OK) {
        index = NULL; /* no block of the namespace yet: nothing cached */
    }
    keys = kv_coord_buf(&coord->schedule_keys, req->n_keys * sizeof(*keys) + 1);
    for (size_t i = 0; i < req->n_keys; i++) {
        memcpy(keys[i].bytes, req->keys[i].data, KVP_KEY_LEN);
    }
    sreq.keys          = keys;
    sreq.count         = req->n_keys;
    sreq.prompt_tokens = req->prompt_tokens;
    sreq.output_tokens = req->output_tokens;
    status             = kv_sched_schedule(coord->sched, index, &sreq, &plan);
    if (status != KVP_OK) {
        kv_rpc_reply_error(call, status, "the scheduler refused the request: %s",
                           kvp_status_string(status));
        return;
    }
    coord->decisions[kv_sched_policy(coord->sched)]++;
    kv_coord_view_schedule(coord, &plan, &sreq, index != NULL ? sreq.ns_id : UINT32_MAX,
                           &req->ns);

    reply.prefill_id   = plan.prefill;
    reply.prefill_name = coord->instances[plan.prefill].name;
    reply.decode_id    = plan.decode;
    reply.decode_name  = coord->instances[plan.decode].name;
    reply.cached       = plan.cached;
    reply.local        = plan.local;
    reply.load         = plan.load;
    reply.save_node    = plan.save_node;
    reply.queue_s      = plan.queue_s;
    reply.transfer_s   = plan.transfer_s;
    reply.prefill_s    = plan.prefill_s;
    reply.ttft_s       = plan.ttft_s;
    reply.policy       = (char *)kv_sched_policy_name(kv_sched_policy(coord->sched));
    for (uint32_t i = 0; i < plan.n_runs; i++) {
        kvpool__load_run__init(&runs[i]);
        runs[i].first   = plan.runs[i].first;
        runs[i].count   = plan.runs[i].count;
        runs[i].node_id = plan.runs[i].node;
        run_ptrs[i]     = &runs[i];
        n_named         = kv_coord_id_add(named, n_named, plan.runs[i].node);
    }
    reply.n_runs = plan.n_runs;
    reply.runs   = run_ptrs;
    n_named      = kv_coord_id_add(named, n_named, plan.save_node);
    for (size_t i = 0; i < n_named; i++) {
        const kv_coord_member_t *m = kv_coord_members_find(coord->members, named[i]);

        if (m != NULL) {
            kv_coord_node_info(m, &infos[reply.n_nodes],
                               &tiers[reply.n_nodes * KV_COORD_TIER_COUNT]);
            info_ptrs[reply.n_nodes] = &infos[reply.n_nodes];
            reply.n_nodes++;
        }
    }
    reply.nodes = info_ptrs;
    kv_rpc_reply(call, KVP_OK, &reply.base, NULL, 0, NULL, NULL);
}
