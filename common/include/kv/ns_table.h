/**
 * @file ns_table.h
 * @brief Interned namespaces: each distinct namespace string gets a small
 * id (0, 1, 2... in order of creation), never reused or forgotten, so
 * tables can store the id instead of the string.
 *
 * Threading: none.  A table belongs to one thread.
 */
#ifndef KV_NS_TABLE_H
#define KV_NS_TABLE_H

#include <kvpool/kvpool.h>

#include <stddef.h>
#include <stdint.h>

typedef struct kv_ns_table kv_ns_table_t;

/**
 * @brief An empty table of at most @p max (1..65534) namespaces; @p owner
 * names its user in log lines.  Aborts if out of memory.
 */
kv_ns_table_t *kv_ns_table_create(uint32_t max, const char *owner);

/** @brief Free the table and its names.  NULL is accepted. */
void kv_ns_table_destroy(kv_ns_table_t *table);

/**
 * @brief The id of namespace @p ns, optionally interning it.
 *
 * @param [in]  ns     @p len bytes (need not be NUL-terminated; copied).
 * @param [in]  len    1..KVP_NAMESPACE_MAX.
 * @param [in]  create non-zero to intern @p ns if it is new.
 * @param [out] id_p   the id, set only on success.
 * @return KVP_OK; KVP_ERR_INVALID_PARAM for a bad length or NULL argument;
 *         KVP_ERR_NOT_FOUND if @p ns is unknown and !@p create;
 *         KVP_ERR_NO_SPACE if the table holds its maximum already.
 */
kvp_status_t kv_ns_table_id(kv_ns_table_t *table, const void *ns, size_t len,
                            int create, uint32_t *id_p);

/** @return how many namespaces are interned (ids are below it). */
uint32_t kv_ns_table_count(const kv_ns_table_t *table);

/**
 * @return the bytes of namespace @p id (not NUL-terminated) and their
 *         length in @p len_p, or NULL for an unknown id.
 */
const char *kv_ns_table_name(const kv_ns_table_t *table, uint32_t id, size_t *len_p);

/** @return the memory the table holds, all included. */
size_t kv_ns_table_bytes(const kv_ns_table_t *table);

#endif
