/*
 * Disaggregated serving, the client's half: instances (join, report,
 * leave), Schedule, and carrying a plan out (load its prefix, save the new
 * blocks on its save node).  Connected to a coordinator only.
 *
 * An instance handle keeps what it joined with, so that a report the
 * coordinator refuses (it restarted, or the lease ran out) joins again; its
 * mutex makes report and re-join one step for callers on several threads.
 */
#include "cluster.h"

#include <kv/alloc.h>
#include <kv/log.h>
#include <kv/util.h>
#include <kvproto/coord_service.h>

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

struct kvp_instance {
    kvp_client_h    client;
    pthread_mutex_t lock;
    uint32_t        id;
    uint64_t        incarnation;
    char            name[KVP_INSTANCE_NAME_MAX + 1];
    char            node[256];
    uint32_t        roles;
    uint64_t        capacity_blocks;
};

static kvp_status_t instance_join(struct kvp_instance *inst)
{
    Kvpool__InstanceJoinRequest req   = KVPOOL__INSTANCE_JOIN_REQUEST__INIT;
    Kvpool__InstanceJoinReply  *reply = NULL;
    kvp_status_t                status;

    if (getrandom(&inst->incarnation, sizeof(inst->incarnation), 0) !=
        sizeof(inst->incarnation)) {
        inst->incarnation = kv_time_ns() ^ (uint64_t)(uintptr_t)inst;
    }
    req.name            = inst->name;
    req.roles           = inst->roles;
    req.capacity_blocks = inst->capacity_blocks;
    req.node            = inst->node;
    req.incarnation     = inst->incarnation;
    status = kvp__coord_call(inst->client->cluster, KV_COORD_INSTANCE_JOIN, &req.base,
                             (ProtobufCMessage **)&reply);
    if (status == KVP_OK) {
        inst->id = reply->instance_id;
        protobuf_c_message_free_unpacked(&reply->base, NULL);
    }
    return status;
}

kvp_status_t kvp_instance_join(kvp_client_h client, const kvp_instance_params_t *params,
                               kvp_instance_h *inst_p)
{
    struct kvp_instance *inst;
    kvp_status_t         status;

    if (client == NULL || params == NULL || inst_p == NULL || params->name == NULL ||
        strlen(params->name) == 0 || strlen(params->name) > KVP_INSTANCE_NAME_MAX ||
        (params->node != NULL && strlen(params->node) > 255)) {
        return KVP_ERR_INVALID_PARAM;
    }
    if (client->cluster == NULL) {
        return KVP_ERR_UNSUPPORTED;
    }
    inst                  = kv_calloc(1, sizeof(*inst), "instance");
    inst->client          = client;
    inst->roles           = params->roles;
    inst->capacity_blocks = params->capacity_blocks;
    snprintf(inst->name, sizeof(inst->name), "%s", params->name);
    snprintf(inst->node, sizeof(inst->node), "%s", params->node ? params->node : "");
    pthread_mutex_init(&inst->lock, NULL);
    status = instance_join(inst);
    if (status != KVP_OK) {
        pthread_mutex_destroy(&inst->lock);
        kv_free(inst);
        return status;
    }
    *inst_p = inst;
    return KVP_OK;
}

uint32_t kvp_instance_id(kvp_instance_h inst)
{
    uint32_t id;

    pthread_mutex_lock(&inst->lock);
    id = inst->id;
    pthread_mutex_unlock(&inst->lock);
    return id;
}

kvp_status_t kvp_instance_report(kvp_instance_h inst, const kvp_instance_load_t *load)
{
    Kvpool__InstanceReportRequest req   = KVPOOL__INSTANCE_REPORT_REQUEST__INIT;
    Kvpool__InstanceReportReply  *reply = NULL;
    kvp_status_t                  status;

    if (inst == NULL || load == NULL) {
        return KVP_ERR_INVALID_PARAM;
    }
    pthread_mutex_lock(&inst->lock);
    for (int attempt = 0; attempt < 2; attempt++) {
        req.instance_id           = inst->id;
        req.incarnation           = inst->incarnation;
        req.queued_prefill_tokens = load->queued_prefill_tokens;
        req.running_decode        = load->running_decode;
        req.free_blocks           = load->free_blocks;
        status = kvp__coord_call(inst->client->cluster, KV_COORD_INSTANCE_REPORT,
                                 &req.base, (ProtobufCMessage **)&reply);
        if (status == KVP_OK) {
            protobuf_c_message_free_unpacked(&reply->base, NULL);
            break;
        }
        if (status != KVP_ERR_NOT_FOUND || attempt > 0) {
            break;
        }
        kv_log_info("instance %u '%s': the coordinator forgot it; joining again",
                    inst->id, inst->name);
        status = instance_join(inst);
        if (status != KVP_OK) {
            break;
        }
    }
    pthread_mutex_unlock(&inst->lock);
    return status;
}

kvp_status_t kvp_instance_leave(kvp_instance_h inst)
{
    Kvpool__InstanceLeaveRequest req   = KVPOOL__INSTANCE_LEAVE_REQUEST__INIT;
    Kvpool__InstanceLeaveReply  *reply = NULL;
    kvp_status_t                 status;

    if (inst == NULL) {
        return KVP_OK;
    }
    req.instance_id = inst->id;
    req.incarnation = inst->incarnation;
    status = kvp__coord_call(inst->client->cluster, KV_COORD_INSTANCE_LEAVE, &req.base,
                             (ProtobufCMessage **)&reply);
    if (status == KVP_OK) {
        protobuf_c_message_free_unpacked(&reply->base, NULL);
    }
    pthread_mutex_destroy(&inst->lock);
    kv_free(inst);
    return status;
}

/* The plan's runs cover blocks [0, load) in order, each on a node. */
static int runs_cover(const kvp_plan_t *plan)
{
    uint32_t next = 0;

    if (plan->n_runs > KVP_PLAN_RUNS_MAX) {
        return 0;
    }
    for (uint32_t i = 0; i < plan->n_runs; i++) {
        const kvp_plan_run_t *run = &plan->runs[i];

        if (run->first != next || run->count == 0 || run->count > plan->load - next ||
            run->node_id == 0 || run->node_id > KV_COORD_NODE_MAX) {
            return 0;
        }
        next += run->count;
    }
    return next == plan->load;
}

/* A Schedule reply for @p count keys, into @p plan; KVP_ERR_PROTOCOL if it
   does not fit (runs out of order or past the chain, counts too large). */
static kvp_status_t plan_from_reply(kvp__cluster_t *cl, const Kvpool__ScheduleReply *r,
                                    size_t count, kvp_plan_t *plan)
{
    if (r->load > r->cached || r->cached > count || r->local > r->cached ||
        r->n_runs > KVP_PLAN_RUNS_MAX) {
        kv_log_warn("coordinator: a plan of %u/%u/%u blocks and %zu runs for %zu keys",
                    r->local, r->load, r->cached, r->n_runs, count);
        return KVP_ERR_PROTOCOL;
    }
    memset(plan, 0, sizeof(*plan));
    for (size_t i = 0; i < r->n_runs; i++) {
        plan->runs[i] =
            (kvp_plan_run_t){r->runs[i]->first, r->runs[i]->count, r->runs[i]->node_id};
    }
    plan->prefill_id = r->prefill_id;
    plan->decode_id  = r->decode_id;
    snprintf(plan->prefill_name, sizeof(plan->prefill_name), "%s", r->prefill_name);
    snprintf(plan->decode_name, sizeof(plan->decode_name), "%s", r->decode_name);
    plan->cached       = r->cached;
    plan->local        = r->local;
    plan->load         = r->load;
    plan->n_runs       = (uint32_t)r->n_runs;
    plan->save_node_id = r->save_node;
    plan->queue_s      = r->queue_s;
    plan->transfer_s   = r->transfer_s;
    plan->prefill_s    = r->prefill_s;
    plan->ttft_s       = r->ttft_s;
    if (!runs_cover(plan)) {
        kv_log_warn("coordinator: the plan's runs do not cover its %u blocks in order",
                    r->load);
        return KVP_ERR_PROTOCOL;
    }
    return kvp__peers_learn(cl, r->nodes, r->n_nodes);
}

kvp_status_t kvp_schedule(kvp_client_h client, const char *ns, const kvp_key_t *keys,
                          size_t count, uint64_t prompt_tokens, uint64_t output_tokens,
                          kvp_plan_t *plan_p)
{
    Kvpool__ScheduleRequest req   = KVPOOL__SCHEDULE_REQUEST__INIT;
    Kvpool__ScheduleReply  *reply = NULL;
    kvp_status_t            status;

    if (client == NULL || !kvp__ns_valid(ns) || (keys == NULL && count > 0) ||
        count > KVP_BATCH_MAX || plan_p == NULL) {
        return KVP_ERR_INVALID_PARAM;
    }
    if (client->cluster == NULL) {
        return KVP_ERR_UNSUPPORTED;
    }
    req.ns            = kvp__ns_bytes(ns);
    req.n_keys        = count;
    req.keys          = kvp__keys_borrow(keys, count);
    req.prompt_tokens = prompt_tokens;
    req.output_tokens = output_tokens;
    status            = kvp__coord_call(client->cluster, KV_COORD_SCHEDULE, &req.base,
                                        (ProtobufCMessage **)&reply);
    kv_free(req.keys);
    if (status == KVP_OK) {
        status = plan_from_reply(client->cluster, reply, count, plan_p);
        protobuf_c_message_free_unpacked(&reply->base, NULL);
    }
    return status;
}

kvp_status_t kvp_plan_load(kvp_client_h client, const kvp_plan_t *plan, const char *ns,
                           const kvp_key_t *keys, void *const *bufs,
                           const uint64_t *capacities, size_t count, uint64_t *sizes,
                           size_t *loaded_p)
{
    uint32_t    *node_ids;
    kvp_status_t status;

    if (client == NULL || plan == NULL || !kvp__ns_valid(ns) || loaded_p == NULL ||
        plan->load > count || count > KVP_BATCH_MAX || !runs_cover(plan) ||
        (plan->load > 0 &&
         (keys == NULL || bufs == NULL || capacities == NULL || sizes == NULL))) {
        return KVP_ERR_INVALID_PARAM;
    }
    if (client->cluster == NULL) {
        return KVP_ERR_UNSUPPORTED;
    }
    node_ids = kv_malloc((plan->load + 1) * sizeof(*node_ids), "plan nodes");
    for (uint32_t r = 0, next = 0; r < plan->n_runs; r++) {
        for (uint32_t i = 0; i < plan->runs[r].count; i++) {
            node_ids[next++] = plan->runs[r].node_id;
        }
    }
    status = kvp__cluster_get_from(client, ns, keys, node_ids, bufs, capacities,
                                   plan->load, sizes, loaded_p);
    kv_free(node_ids);
    return status;
}

kvp_status_t kvp_plan_save(kvp_client_h client, const kvp_plan_t *plan, const char *ns,
                           const kvp_key_t *keys, const void *const *datas,
                           const uint64_t *sizes, size_t first, size_t count)
{
    kvp_status_t *statuses;
    kvp_status_t  status = KVP_ERR_NOT_FOUND;

    if (client == NULL || plan == NULL || !kvp__ns_valid(ns) || first > count ||
        count > KVP_BATCH_MAX ||
        (count > 0 && (keys == NULL || datas == NULL || sizes == NULL))) {
        return KVP_ERR_INVALID_PARAM;
    }
    for (size_t i = 0; i < count; i++) {
        if (datas[i] == NULL || sizes[i] == 0 || sizes[i] > KVP_BLOCK_MAX) {
            return KVP_ERR_INVALID_PARAM;
        }
    }
    if (client->cluster == NULL) {
        return KVP_ERR_UNSUPPORTED;
    }
    if (first == count) {
        return KVP_OK;
    }
    if (plan->save_node_id != 0) {
        status = kvp__cluster_put_to(client, ns, keys, datas, sizes, first, count,
                                     plan->save_node_id);
    }
    if (status == KVP_OK ||
        !(status == KVP_ERR_NOT_FOUND || status == KVP_ERR_TIMED_OUT ||
          KVP_STATUS_IS_CONNECTION_ERROR(status) || status <= KVP_ERR_FIRST_NODE)) {
        return status;
    }
    /* no save node, or it is gone: place the chain as any put would */
    statuses = kv_malloc(count * sizeof(*statuses), "save statuses");
    status   = kvp_put_chain(client, ns, keys, datas, sizes, count, statuses);
    for (size_t i = 0; status == KVP_OK && i < count; i++) {
        status = statuses[i];
    }
    kv_free(statuses);
    return status;
}

kvp_status_t kvp_plan_handover(const kvp_plan_t *plan, size_t loaded, size_t count,
                               kvp_plan_t *out_p)
{
    kvp_plan_t out;

    if (plan == NULL || out_p == NULL || loaded > plan->load || loaded > count ||
        count > KVP_BATCH_MAX || plan->n_runs > KVP_PLAN_RUNS_MAX) {
        return KVP_ERR_INVALID_PARAM;
    }
    out        = *plan;
    out.n_runs = 0;
    out.load   = 0;
    for (uint32_t r = 0; r < plan->n_runs && out.load < loaded; r++) {
        kvp_plan_run_t run = plan->runs[r];

        run.count              = (uint32_t)KV_MIN((size_t)run.count, loaded - out.load);
        out.runs[out.n_runs++] = run;
        out.load += run.count;
    }
    if (plan->save_node_id != 0 && loaded < count && out.n_runs < KVP_PLAN_RUNS_MAX) {
        out.runs[out.n_runs++] = (kvp_plan_run_t){
            (uint32_t)loaded, (uint32_t)(count - loaded), plan->save_node_id};
        out.load = (uint32_t)count;
    }
    *out_p = out;
    return KVP_OK;
}
