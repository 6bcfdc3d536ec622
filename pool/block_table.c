/*
 * block_table.c - the node's block table.
 *
 * Every live block is on exactly one doubly-linked list:
 *  - committed: the COMMITTED blocks, most recently used at the head (the
 *           order of foreach);
 *  - limbo: PENDING and DEAD blocks, which nobody looks up or evicts; kept
 *           only so that destroy can free them.
 * COMMITTED blocks are also tracked by the eviction policy (evict.h), which
 * picks the victims; unpinned ones are its candidates (a block's first pin
 * pins its policy entry, its last unpin unpins it).
 * COMMITTED blocks are also in a chained hash table keyed by (ns id, key);
 * at most one committed block exists per (ns id, key).  It doubles its
 * bucket count when it holds more blocks than buckets.
 *
 * Byte counters are in arena bytes (block sizes rounded up by the arena):
 * used_bytes sums the committed blocks, pinned_bytes the committed blocks
 * with pins.  Their difference is what eviction can free, which lets
 * reserve fail at once, evicting nothing, when even that is not enough.
 *
 * Namespaces are interned by a kv_ns_table (<kv/ns_table.h>).
 */
#include "block_table.h"

#include <kv/alloc.h>
#include <kv/hash.h>
#include <kv/log.h>
#include <kv/ns_table.h>
#include <kv/util.h>

#include <assert.h>
#include <string.h>

enum {
    KV_BLOCK_STATE_PENDING = 1,
    KV_BLOCK_STATE_COMMITTED,
    KV_BLOCK_STATE_DEAD
};

#define BLOCK_TABLE_INITIAL_BUCKETS 1024

typedef struct block_list {
    kv_block_t *head;   /* most recently used / added */
    kv_block_t *tail;
} block_list_t;

struct kv_block_table {
    kv_arena_t   *arena;

    kv_block_t  **buckets;
    size_t        num_buckets;  /* a power of two */
    uint64_t      num_blocks;   /* committed */

    block_list_t  committed;
    block_list_t  limbo;
    kv_evict_t   *policy;

    uint64_t      used_bytes;
    uint64_t      pinned_bytes;
    uint64_t      evictions;
    uint64_t      evicted_bytes;

    kv_block_listener_t listener;
    void         *listener_arg;

    kv_ns_table_t *ns;
};


static void block_list_push_head(block_list_t *list, kv_block_t *block)
{
    block->prev = NULL;
    block->next = list->head;
    if (list->head != NULL) {
        list->head->prev = block;
    } else {
        list->tail = block;
    }
    list->head = block;
}

static void block_list_remove(block_list_t *list, kv_block_t *block)
{
    if (block->prev != NULL) {
        block->prev->next = block->next;
    } else {
        list->head = block->next;
    }
    if (block->next != NULL) {
        block->next->prev = block->prev;
    } else {
        list->tail = block->prev;
    }
    block->prev = block->next = NULL;
}

static uint64_t block_hash(uint32_t ns_id, const kvp_key_t *key)
{
    uint64_t h = kv_key_hash64(key) ^ ((uint64_t)ns_id * 0x9e3779b97f4a7c15ull);

    /* splitmix64 finaliser: keys need not be random in every byte */
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebull;
    h ^= h >> 31;
    return h;
}

static kv_block_t **block_bucket(const kv_block_table_t *table, uint32_t ns_id,
                                 const kvp_key_t *key)
{
    return &table->buckets[block_hash(ns_id, key) & (table->num_buckets - 1)];
}

static kv_block_t *block_hash_find(const kv_block_table_t *table,
                                   uint32_t ns_id, const kvp_key_t *key)
{
    kv_block_t *block;

    for (block = *block_bucket(table, ns_id, key); block != NULL;
         block = block->hash_next) {
        if ((block->ns_id == ns_id) &&
            (memcmp(block->key.bytes, key->bytes, KVP_KEY_LEN) == 0)) {
            return block;
        }
    }
    return NULL;
}

static void block_hash_grow(kv_block_table_t *table)
{
    size_t       old_count   = table->num_buckets;
    kv_block_t **old_buckets = table->buckets;
    kv_block_t  *block, *next;

    table->num_buckets = 2 * old_count;
    table->buckets     = kv_calloc(table->num_buckets, sizeof(*table->buckets),
                                   "block hash");
    for (size_t i = 0; i < old_count; i++) {
        for (block = old_buckets[i]; block != NULL; block = next) {
            kv_block_t **bucket = block_bucket(table, block->ns_id, &block->key);

            next             = block->hash_next;
            block->hash_next = *bucket;
            *bucket          = block;
        }
    }
    kv_free(old_buckets);
}

static void block_hash_insert(kv_block_table_t *table, kv_block_t *block)
{
    kv_block_t **bucket;

    if (table->num_blocks >= table->num_buckets) {
        block_hash_grow(table);
    }
    bucket           = block_bucket(table, block->ns_id, &block->key);
    block->hash_next = *bucket;
    *bucket          = block;
}

static void block_hash_remove(kv_block_table_t *table, kv_block_t *block)
{
    kv_block_t **link = block_bucket(table, block->ns_id, &block->key);

    while (*link != block) {
        assert(*link != NULL);
        link = &(*link)->hash_next;
    }
    *link            = block->hash_next;
    block->hash_next = NULL;
}

/* Return the space of a block on no list and free it. */
static void block_release(kv_block_table_t *table, kv_block_t *block)
{
    kv_arena_free(table->arena, block->offset);
    kv_free(block);
}

/*
 * Unpublish a COMMITTED block (removed, replaced or evicted) that has left
 * the policy: it leaves the hash and the committed list, and is freed now,
 * or made DEAD until its last unpin.
 */
static void block_unpublish(kv_block_table_t *table, kv_block_t *block)
{
    assert(block->state == KV_BLOCK_STATE_COMMITTED);
    if (table->listener != NULL) {
        table->listener(table->listener_arg, 0, block);
    }
    block_hash_remove(table, block);
    block_list_remove(&table->committed, block);
    table->num_blocks--;
    table->used_bytes -= block->alloc_size;

    if (block->pins == 0) {
        block_release(table, block);
        return;
    }
    table->pinned_bytes -= block->alloc_size;
    block->state         = KV_BLOCK_STATE_DEAD;
    block_list_push_head(&table->limbo, block);
}

/*
 * Evict the policy's next victim (a COMMITTED block without pins: pinned
 * ones are pinned in the policy too).  @return 0 if there is none.
 */
static int block_table_evict_one(kv_block_table_t *table)
{
    kv_evict_entry_t *entry = kv_evict_pop(table->policy);
    kv_block_t       *block;

    if (entry == NULL) {
        return 0;
    }
    block = kv_container_of(entry, kv_block_t, evict);
    assert(block->pins == 0);
    table->evictions++;
    table->evicted_bytes += block->alloc_size;
    block_unpublish(table, block);
    return 1;
}

kvp_status_t kv_block_table_create(kv_arena_t *arena, const char *policy,
                                   kv_block_table_t **table_p)
{
    kv_block_table_t *table;
    kv_evict_t       *evict;
    kvp_status_t      status;

    if ((arena == NULL) || (table_p == NULL)) {
        return KVP_ERR_INVALID_PARAM;
    }
    status = kv_evict_create(policy, &evict);
    if (status != KVP_OK) {
        return status;
    }

    table              = kv_calloc(1, sizeof(*table), "block table");
    table->arena       = arena;
    table->policy      = evict;
    table->num_buckets = BLOCK_TABLE_INITIAL_BUCKETS;
    table->buckets     = kv_calloc(table->num_buckets, sizeof(*table->buckets),
                                   "block hash");
    table->ns          = kv_ns_table_create(KV_BLOCK_TABLE_MAX_NAMESPACES, "block table");
    *table_p = table;
    return KVP_OK;
}

static void block_list_release_all(kv_block_table_t *table, block_list_t *list)
{
    kv_block_t *block, *next;

    for (block = list->head; block != NULL; block = next) {
        next = block->next;
        block_release(table, block);
    }
    list->head = list->tail = NULL;
}

void kv_block_table_destroy(kv_block_table_t *table)
{
    if (table == NULL) {
        return;
    }
    block_list_release_all(table, &table->committed);
    block_list_release_all(table, &table->limbo);
    kv_evict_destroy(table->policy);
    kv_ns_table_destroy(table->ns);
    kv_free(table->buckets);
    kv_free(table);
}

kvp_status_t kv_block_table_ns_id(kv_block_table_t *table, const char *ns,
                                  size_t len, int create, uint32_t *id_p)
{
    return kv_ns_table_id(table->ns, ns, len, create, id_p);
}

static kvp_status_t block_table_reserve(kv_block_table_t *table, uint32_t ns_id,
                                        const kvp_key_t *key, uint64_t size,
                                        int may_evict, kv_block_t **block_p)
{
    uint64_t     capacity = kv_arena_capacity(table->arena);
    uint64_t     rounded, reclaimable, offset;
    kv_block_t  *block;
    kvp_status_t status;

    if ((key == NULL) || (block_p == NULL) || (size == 0) ||
        (ns_id >= kv_ns_table_count(table->ns))) {
        return KVP_ERR_INVALID_PARAM;
    }
    if (size > capacity) {
        return KVP_ERR_TOO_LARGE;
    }

    /* free space plus what eviction could free: if short, evict nothing */
    rounded     = (size + KV_ARENA_PAGE_SIZE - 1) & ~(KV_ARENA_PAGE_SIZE - 1);
    reclaimable = capacity - kv_arena_used(table->arena) +
                  table->used_bytes - table->pinned_bytes;
    if (reclaimable < rounded) {
        return KVP_ERR_NO_SPACE;
    }

    for (;;) {
        status = kv_arena_alloc(table->arena, size, &offset);
        if (status == KVP_OK) {
            break;
        }
        if (status != KVP_ERR_NO_SPACE || !may_evict) {
            return status;
        }
        if (!block_table_evict_one(table)) {
            /* enough bytes in total, but not contiguous */
            return KVP_ERR_NO_SPACE;
        }
    }

    block             = kv_calloc(1, sizeof(*block), "block");
    block->key        = *key;
    block->ns_id      = ns_id;
    block->offset     = offset;
    block->size       = size;
    block->alloc_size = kv_arena_alloc_size(table->arena, offset);
    block->state      = KV_BLOCK_STATE_PENDING;
    block_list_push_head(&table->limbo, block);
    *block_p = block;
    return KVP_OK;
}

kvp_status_t kv_block_table_reserve(kv_block_table_t *table, uint32_t ns_id,
                                    const kvp_key_t *key, uint64_t size,
                                    kv_block_t **block_p)
{
    return block_table_reserve(table, ns_id, key, size, 1, block_p);
}

kvp_status_t kv_block_table_reserve_free(kv_block_table_t *table, uint32_t ns_id,
                                         const kvp_key_t *key, uint64_t size,
                                         kv_block_t **block_p)
{
    return block_table_reserve(table, ns_id, key, size, 0, block_p);
}

void kv_block_table_commit(kv_block_table_t *table, kv_block_t *block,
                           uint64_t checksum)
{
    kv_block_t *old, *parent = NULL;

    assert(block->state == KV_BLOCK_STATE_PENDING);
    assert(block->pins == 0);

    /* the policy ages entries by the monotonic clock ("density") */
    kv_evict_set_time(table->policy, kv_time_ns() / 1000);
    old = block_hash_find(table, block->ns_id, &block->key);
    if (old != NULL) {
        kv_evict_replace(table->policy, &old->evict, &block->evict);
        block_unpublish(table, old);
    } else {
        if (block->has_parent) {
            parent = block_hash_find(table, block->ns_id, &block->parent);
        }
        kv_evict_insert(table->policy, &block->evict,
                        parent != NULL ? &parent->evict : NULL,
                        block_hash(block->ns_id, &block->key));
    }

    block_list_remove(&table->limbo, block);
    block->checksum = checksum;
    block->state    = KV_BLOCK_STATE_COMMITTED;
    block_hash_insert(table, block);
    block_list_push_head(&table->committed, block);
    table->num_blocks++;
    table->used_bytes += block->alloc_size;
    if (table->listener != NULL) {
        table->listener(table->listener_arg, 1, block);
    }
}

void kv_block_table_abort(kv_block_table_t *table, kv_block_t *block)
{
    assert(block->state == KV_BLOCK_STATE_PENDING);
    assert(block->pins == 0);
    block_list_remove(&table->limbo, block);
    block_release(table, block);
}

kv_block_t *kv_block_table_lookup(kv_block_table_t *table, uint32_t ns_id,
                                  const kvp_key_t *key)
{
    return block_hash_find(table, ns_id, key);
}

void kv_block_table_touch(kv_block_table_t *table, kv_block_t *block)
{
    assert(block->state != KV_BLOCK_STATE_PENDING);
    if (block->state != KV_BLOCK_STATE_COMMITTED) {
        return;
    }
    kv_evict_set_time(table->policy, kv_time_ns() / 1000);
    kv_evict_touch(table->policy, &block->evict);
    if (table->committed.head != block) {
        block_list_remove(&table->committed, block);
        block_list_push_head(&table->committed, block);
    }
}

void kv_block_table_pin(kv_block_table_t *table, kv_block_t *block)
{
    assert((block->state == KV_BLOCK_STATE_COMMITTED) ||
           (block->state == KV_BLOCK_STATE_DEAD));
    assert(block->pins < UINT32_MAX);
    if ((block->pins++ == 0) && (block->state == KV_BLOCK_STATE_COMMITTED)) {
        table->pinned_bytes += block->alloc_size;
        kv_evict_pin(table->policy, &block->evict);
    }
}

void kv_block_table_unpin(kv_block_table_t *table, kv_block_t *block)
{
    assert((block->state == KV_BLOCK_STATE_COMMITTED) ||
           (block->state == KV_BLOCK_STATE_DEAD));
    assert(block->pins > 0);
    if (--block->pins > 0) {
        return;
    }
    if (block->state == KV_BLOCK_STATE_COMMITTED) {
        table->pinned_bytes -= block->alloc_size;
        kv_evict_unpin(table->policy, &block->evict);
    } else {
        block_list_remove(&table->limbo, block);
        block_release(table, block);
    }
}

int kv_block_table_remove(kv_block_table_t *table, uint32_t ns_id,
                          const kvp_key_t *key)
{
    kv_block_t *block = block_hash_find(table, ns_id, key);

    if (block == NULL) {
        return 0;
    }
    kv_evict_remove(table->policy, &block->evict);
    block_unpublish(table, block);
    return 1;
}

void kv_block_table_set_parent(kv_block_t *block, const kvp_key_t *parent)
{
    assert(block->state == KV_BLOCK_STATE_PENDING);
    block->parent     = *parent;
    block->has_parent = 1;
}

void kv_block_table_set_listener(kv_block_table_t *table,
                                 kv_block_listener_t listener, void *arg)
{
    table->listener     = listener;
    table->listener_arg = arg;
}

void kv_block_table_foreach(const kv_block_table_t *table,
                            int (*fn)(const kv_block_t *block, void *arg),
                            void *arg)
{
    for (const kv_block_t *block = table->committed.head; block != NULL;
         block = block->next) {
        if (fn(block, arg) != 0) {
            return;
        }
    }
}

const char *kv_block_table_ns_name(const kv_block_table_t *table, uint32_t ns_id,
                                   size_t *len_p)
{
    return kv_ns_table_name(table->ns, ns_id, len_p);
}

void *kv_block_table_data(kv_block_table_t *table, const kv_block_t *block)
{
    return kv_arena_ptr(table->arena, block->offset);
}

void kv_block_table_stats(const kv_block_table_t *table,
                          kv_block_table_stats_t *stats_p)
{
    stats_p->blocks        = table->num_blocks;
    stats_p->used_bytes    = table->used_bytes;
    stats_p->evictions     = table->evictions;
    stats_p->evicted_bytes = table->evicted_bytes;
}
