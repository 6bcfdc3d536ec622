/*
 * ns_table.c - interned namespaces.
 *
 * Names live in an array indexed by id; an open-addressing index of at
 * least twice the maximum (load factor <= 1/2) maps a name to its id.
 */
#include <kv/alloc.h>
#include <kv/hash.h>
#include <kv/log.h>
#include <kv/ns_table.h>

#include <string.h>

struct kv_ns_table {
    const char *owner;
    uint32_t    max;
    uint32_t    count;
    size_t      num_slots;  /* a power of two >= 2 * max */
    size_t      name_bytes;
    char      **names;      /* [max] */
    uint8_t    *lens;       /* [max] */
    uint16_t   *slots;      /* [num_slots] id + 1, 0 = empty */
};

_Static_assert(KVP_NAMESPACE_MAX <= UINT8_MAX, "namespace lengths fit lens");

kv_ns_table_t *kv_ns_table_create(uint32_t max, const char *owner)
{
    kv_ns_table_t *table = kv_calloc(1, sizeof(*table), "namespaces");

    table->owner     = owner;
    table->max       = max;
    table->num_slots = 2;
    while (table->num_slots < 2 * (size_t)max) {
        table->num_slots *= 2;
    }
    table->names = kv_calloc(max, sizeof(*table->names), "namespaces");
    table->lens  = kv_calloc(max, sizeof(*table->lens), "namespaces");
    table->slots = kv_calloc(table->num_slots, sizeof(*table->slots), "namespace index");
    return table;
}

void kv_ns_table_destroy(kv_ns_table_t *table)
{
    if (table == NULL) {
        return;
    }
    for (uint32_t id = 0; id < table->count; id++) {
        kv_free(table->names[id]);
    }
    kv_free(table->names);
    kv_free(table->lens);
    kv_free(table->slots);
    kv_free(table);
}

kvp_status_t kv_ns_table_id(kv_ns_table_t *table, const void *ns, size_t len,
                            int create, uint32_t *id_p)
{
    size_t   mask = table->num_slots - 1, slot;
    uint32_t id;

    if ((ns == NULL) || (id_p == NULL) || (len == 0) || (len > KVP_NAMESPACE_MAX)) {
        return KVP_ERR_INVALID_PARAM;
    }
    for (slot = kv_checksum(ns, len) & mask; table->slots[slot] != 0;
         slot = (slot + 1) & mask) {
        id = table->slots[slot] - 1u;
        if ((table->lens[id] == len) && (memcmp(table->names[id], ns, len) == 0)) {
            *id_p = id;
            return KVP_OK;
        }
    }
    if (!create) {
        return KVP_ERR_NOT_FOUND;
    }
    if (table->count >= table->max) {
        kv_log_warn("%s: namespace limit (%u) reached", table->owner, table->max);
        return KVP_ERR_NO_SPACE;
    }
    id                 = table->count++;
    table->names[id]   = kv_malloc(len, "namespace");
    memcpy(table->names[id], ns, len);
    table->lens[id]    = (uint8_t)len;
    table->slots[slot] = (uint16_t)(id + 1);
    table->name_bytes += len;
    kv_log_debug("%s: namespace '%.*s' is id %u", table->owner, (int)len,
                 (const char *)ns, id);
    *id_p = id;
    return KVP_OK;
}

uint32_t kv_ns_table_count(const kv_ns_table_t *table)
{
    return table->count;
}

const char *kv_ns_table_name(const kv_ns_table_t *table, uint32_t id, size_t *len_p)
{
    if (id >= table->count) {
        return NULL;
    }
    *len_p = table->lens[id];
    return table->names[id];
}

size_t kv_ns_table_bytes(const kv_ns_table_t *table)
{
    return sizeof(*table) +
           table->max * (sizeof(*table->names) + sizeof(*table->lens)) +
           table->num_slots * sizeof(*table->slots) + table->name_bytes;
}
