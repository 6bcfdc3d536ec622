/*
 * The chain calls: match, put and get a prompt's chain of blocks from its
 * first block.  This file checks their arguments and runs them against a
 * single node; connected to a coordinator, cluster_data.c runs them.
 *
 * Against one node:
 *   match = Exists (the node's longest stored prefix);
 *   put   = Exists, then one put of the blocks after the stored prefix,
 *           chained (PutStart.chain, with the last stored key as parent)
 *           on the two-phase paths;
 *   get   = Exists, then one batched get of the stored prefix; the first
 *           block that is missing, damaged or does not fit ends it.
 */
#include "client_int.h"

#include <kv/alloc.h>

static int chain_args_valid(kvp_client_h client, const char *ns, const kvp_key_t *keys,
                            size_t count)
{
    return client != NULL && kvp__ns_valid(ns) && (keys != NULL || count == 0) &&
           count <= KVP_BATCH_MAX;
}

kvp_status_t kvp_match(kvp_client_h client, const char *ns, const kvp_key_t *keys,
                       size_t count, size_t *matched_p)
{
    if (!chain_args_valid(client, ns, keys, count) || matched_p == NULL) {
        return KVP_ERR_INVALID_PARAM;
    }
    if (count == 0) {
        *matched_p = 0;
        return KVP_OK;
    }
    if (client->cluster != NULL) {
        return kvp__cluster_match(client, ns, keys, count, matched_p);
    }
    return kvp_exists(client, ns, keys, count, matched_p);
}

kvp_status_t kvp_put_chain(kvp_client_h client, const char *ns, const kvp_key_t *keys,
                           const void *const *datas, const uint64_t *sizes, size_t count,
                           kvp_status_t *statuses)
{
    size_t       present = 0;
    kvp_status_t status;

    if (!chain_args_valid(client, ns, keys, count) ||
        (count > 0 && (datas == NULL || sizes == NULL || statuses == NULL))) {
        return KVP_ERR_INVALID_PARAM;
    }
    for (size_t i = 0; i < count; i++) {
        if (datas[i] == NULL || sizes[i] == 0 || sizes[i] > KVP_BLOCK_MAX) {
            return KVP_ERR_INVALID_PARAM;
        }
    }
    if (count == 0) {
        return KVP_OK;
    }
    if (client->cluster != NULL) {
        return kvp__cluster_put_chain(client, ns, keys, datas, sizes, count, statuses);
    }
    status = kvp_exists(client, ns, keys, count, &present);
    if (status != KVP_OK) {
        return status;
    }
    for (size_t i = 0; i < present; i++) {
        statuses[i] = KVP_OK;
    }
    return kvp__node_put(client, ns, keys + present, datas + present, sizes + present,
                         count - present, 1, present > 0 ? &keys[present - 1] : NULL,
                         statuses + present);
}

kvp_status_t kvp_get_chain(kvp_client_h client, const char *ns, const kvp_key_t *keys,
                           void *const *bufs, const uint64_t *capacities, size_t count,
                           uint64_t *sizes, size_t *loaded_p)
{
    kvp_status_t *statuses;
    size_t        present = 0, loaded = 0;
    kvp_status_t  status;

    if (!chain_args_valid(client, ns, keys, count) || loaded_p == NULL ||
        (count > 0 && (bufs == NULL || capacities == NULL || sizes == NULL))) {
        return KVP_ERR_INVALID_PARAM;
    }
    for (size_t i = 0; i < count; i++) {
        if (bufs[i] == NULL && capacities[i] > 0) {
            return KVP_ERR_INVALID_PARAM;
        }
    }
    if (count == 0) {
        *loaded_p = 0;
        return KVP_OK;
    }
    if (client->cluster != NULL) {
        return kvp__cluster_get_chain(client, ns, keys, bufs, capacities, count, sizes,
                                      loaded_p);
    }
    status = kvp_exists(client, ns, keys, count, &present);
    if (status != KVP_OK) {
        return status;
    }
    if (present == 0) {
        *loaded_p = 0;
        return KVP_OK;
    }
    statuses = kv_malloc(present * sizeof(*statuses), "chain statuses");
    status = kvp__node_get(client, ns, keys, bufs, capacities, present, sizes, statuses);
    while (status == KVP_OK && loaded < present && statuses[loaded] == KVP_OK) {
        loaded++;
    }
    kv_free(statuses);
    if (status == KVP_OK) {
        *loaded_p = loaded;
    }
    return status;
}
