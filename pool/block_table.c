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
 *
 * With an SSD tier, a block's tier says which policy tracks it: host
 * blocks are in `policy`, SSD blocks in `ssd_policy`; a block's parent in
 * a policy is its chain parent when that is in the same tier.  Demotion
 * pops host victims in batches, makes room on SSD (evicting SSD victims
 * for real), writes them in one batch and moves the written ones to the
 * SSD tier; a victim that could not be written is dropped.  used_bytes and
 * pinned_bytes count host blocks only.
 *
 * kv_block_table_balance() leaves its batch in flight (kv_ssd_write_start())
 * and returns, so that the node serves puts while the SSD writes; the next
 * call finishes the batch when it is complete and starts another while
 * memory is above the low watermark.  The victims of a batch in flight
 * (`pending`, each flagged `demoting`) are out of the policy but still
 * host blocks in the hash, in memory that the writes read: whoever finds
 * one in the hash (lookup, remove, replacement) finishes the batch first,
 * waiting for it, and a pending block is never a policy parent.  Every other demotion (a
 * reservation or a stage that needs room) finishes the batch in flight
 * first and waits for its own.
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
/* Most blocks demoted in one batch of writes. */
#define DEMOTE_BATCH 32
/* A demoted block's location before its write returns. */
#define LOC_PENDING (KV_SSD_LOC_NONE - 1)

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

    kv_ssd_t     *ssd;          /* NULL: no SSD tier */
    kv_evict_t   *ssd_policy;
    uint64_t      high_bytes, low_bytes;
    uint64_t      ssd_blocks, ssd_evictions, ssd_failures;
    uint64_t      demotions, demoted_bytes, promotions, promoted_bytes;
    /* the batch demote() left in flight, and balance's state */
    kv_block_t   *pending[DEMOTE_BATCH];
    kv_ssd_io_t   pending_ios[DEMOTE_BATCH];
    size_t        n_pending;
    int           draining; /* above high_bytes, not yet down to low_bytes */
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

/* Return the arena space of a block on no list and free it (an SSD
 * block's record stays: it is freed by block_unpublish()). */
static void block_release(kv_block_table_t *table, kv_block_t *block)
{
    if (block->tier == KV_TIER_HOST) {
        kv_arena_free(table->arena, block->offset);
    }
    kv_free(block);
}

static void block_notify(kv_block_table_t *table, int stored, const kv_block_t *block)
{
    if (table->listener != NULL) {
        table->listener(table->listener_arg, stored, block);
    }
}

static kv_evict_t *policy_of(const kv_block_table_t *table, const kv_block_t *block)
{
    return block->tier == KV_TIER_SSD ? table->ssd_policy : table->policy;
}

/* The entry of @p block's chain parent when it is committed in @p block's
 * tier (and in its policy: not a victim in flight). */
static kv_evict_entry_t *policy_parent(const kv_block_table_t *table, kv_block_t *block)
{
    kv_block_t *parent;

    if (!block->has_parent) {
        return NULL;
    }
    parent = block_hash_find(table, block->ns_id, &block->parent);
    return (parent != NULL && parent != block && parent->tier == block->tier &&
            !parent->demoting)
               ? &parent->evict
               : NULL;
}

static void policy_insert(kv_block_table_t *table, kv_block_t *block)
{
    kv_evict_insert(policy_of(table, block), &block->evict, policy_parent(table, block),
                    block_hash(block->ns_id, &block->key));
}

/*
 * Unpublish a COMMITTED block (removed, replaced or evicted) that has left
 * the policy: it leaves the hash and the committed list, and is freed now,
 * or made DEAD until its last unpin.  An SSD block's record is freed, its
 * header marked dead on disk at once if @p now (a removal or replacement,
 * which must not come back after a restart), else with the next batch.
 */
static void block_unpublish(kv_block_table_t *table, kv_block_t *block, int now)
{
    assert(block->state == KV_BLOCK_STATE_COMMITTED);
    block_notify(table, 0, block);
    block_hash_remove(table, block);
    block_list_remove(&table->committed, block);
    table->num_blocks--;
    if (block->tier == KV_TIER_SSD) {
        assert(block->pins == 0);
        table->ssd_blocks--;
        if (block->ssd_loc != KV_SSD_LOC_NONE) {
            kv_ssd_free(table->ssd, block->ssd_loc, now);
        }
        kv_free(block);
        return;
    }
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
    block_unpublish(table, block, 0);
    return 1;
}

/* Drop the SSD policy's next victim.  @return 0 if there is none. */
static int ssd_evict_one(kv_block_table_t *table)
{
    kv_evict_entry_t *entry = kv_evict_pop(table->ssd_policy);

    if (entry == NULL) {
        return 0;
    }
    table->ssd_evictions++;
    block_unpublish(table, kv_container_of(entry, kv_block_t, evict), 0);
    return 1;
}

/* A demoted host block (out of its policy, its record written) moves to SSD. */
static void block_to_ssd(kv_block_table_t *table, kv_block_t *block)
{
    block_notify(table, 0, block);
    kv_arena_free(table->arena, block->offset);
    table->used_bytes -= block->alloc_size;
    table->demotions++;
    table->demoted_bytes += block->size;
    table->ssd_blocks++;
    block->offset     = 0;
    block->alloc_size = 0;
    block->tier       = KV_TIER_SSD;
    policy_insert(table, block);
    block_notify(table, 1, block);
}

/*
 * Finish the demotion batch in flight, waiting for its writes: the victims
 * written move to the SSD tier, the others are dropped.
 */
static void demote_finish(kv_block_table_t *table)
{
    size_t n = table->n_pending;

    if (n == 0) {
        return;
    }
    kv_ssd_write_wait(table->ssd);
    table->n_pending = 0;
    for (size_t i = 0; i < n; i++) { /* all settle before any moves: parents */
        table->pending[i]->demoting = 0;
    }
    for (size_t i = 0; i < n; i++) {
        kv_block_t  *block = table->pending[i];
        kv_ssd_io_t *io    = &table->pending_ios[i];

        if (io->status == KVP_OK && block->ssd_loc == LOC_PENDING) {
            block->ssd_loc = io->loc;
        } else if (io->status != KVP_OK) {
            block->ssd_loc = KV_SSD_LOC_NONE;
        }
        if (block->ssd_loc != KV_SSD_LOC_NONE) {
            block_to_ssd(table, block);
            continue;
        }
        table->evictions++;
        table->evicted_bytes += block->alloc_size;
        block_unpublish(table, block, 0);
    }
}

/*
 * Demote host victims worth at least @p want arena bytes (one batch of at
 * most DEMOTE_BATCH), after finishing the batch in flight: write them to
 * SSD, and finish (move the written ones, drop those that failed) now, or
 * with @p async leave the batch in flight (demote_finish()).
 * @return how many victims the batch took (0: none to take).
 */
static size_t demote(kv_block_table_t *table, uint64_t want, int async)
{
    kv_block_t **victims = table->pending;
    kv_ssd_io_t *ios     = table->pending_ios;
    uint64_t     freed = 0, record_bytes = 0;
    size_t       n = 0;

    demote_finish(table);
    while (n < DEMOTE_BATCH && freed < want) {
        kv_evict_entry_t *entry = kv_evict_pop(table->policy);
        if (entry == NULL) {
            break;
        }
        victims[n] = kv_container_of(entry, kv_block_t, evict);
        freed += victims[n]->alloc_size;
        record_bytes += kv_ssd_record_bytes(victims[n]->size);
        n++;
    }
    if (n == 0) {
        return 0;
    }
    while (!kv_ssd_fits(table->ssd, record_bytes) && ssd_evict_one(table)) {
    }
    for (size_t i = 0; i < n; i++) {
        kv_block_t *block = victims[i];

        memset(&ios[i], 0, sizeof(ios[i]));
        ios[i].meta.ns         = kv_ns_table_name(table->ns, block->ns_id, &ios[i].meta.ns_len);
        ios[i].meta.key        = block->key;
        ios[i].meta.parent     = block->parent;
        ios[i].meta.has_parent = block->has_parent;
        ios[i].meta.size       = block->size;
        ios[i].meta.checksum   = block->checksum;
        ios[i].data            = kv_arena_ptr(table->arena, block->offset);
        ios[i].owner           = block;
        block->ssd_loc         = LOC_PENDING;
        block->demoting        = 1;
    }
    table->n_pending = n;
    kv_ssd_write_start(table->ssd, ios, n);
    if (!async) {
        demote_finish(table);
    }
    return n;
}

/* The committed block of (@p ns_id, @p key), after finishing the demotion
 * batch in flight if it is one of its victims (a victim whose write failed
 * is gone: NULL). */
static kv_block_t *block_find_settled(kv_block_table_t *table, uint32_t ns_id,
                                      const kvp_key_t *key)
{
    kv_block_t *block = block_hash_find(table, ns_id, key);

    if (block != NULL && block->demoting) {
        demote_finish(table);
        block = block_hash_find(table, ns_id, key);
    }
    return block;
}

/* Free host memory for @p want bytes more: demote or evict.  0: nothing to take. */
static int block_table_free_some(kv_block_table_t *table, uint64_t want)
{
    if (table->ssd == NULL) {
        return block_table_evict_one(table);
    }
    if (table->n_pending > 0) {
        demote_finish(table); /* its victims leave host memory */
        return 1;
    }
    return demote(table, want, 0) > 0;
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
    demote_finish(table); /* its writes read the victims' memory */
    block_list_release_all(table, &table->committed);
    block_list_release_all(table, &table->limbo);
    kv_evict_destroy(table->policy);
    kv_evict_destroy(table->ssd_policy);
    kv_ssd_close(table->ssd);
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
        if (!block_table_free_some(table, rounded)) {
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
    old = block_find_settled(table, block->ns_id, &block->key);
    if (old != NULL && old->tier == KV_TIER_HOST) {
        kv_evict_replace(table->policy, &old->evict, &block->evict);
        block_unpublish(table, old, 1);
    } else {
        if (old != NULL) {
            kv_evict_remove(table->ssd_policy, &old->evict);
            block_unpublish(table, old, 1);
        }
        policy_insert(table, block);
    }
    if (block->has_parent) {
        parent = block_hash_find(table, block->ns_id, &block->parent);
    }
    if (parent != NULL) {
        parent->child     = block->key;
        parent->has_child = 1;
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
    return block_find_settled(table, ns_id, key);
}

void kv_block_table_touch(kv_block_table_t *table, kv_block_t *block)
{
    assert(block->state != KV_BLOCK_STATE_PENDING);
    if (block->state != KV_BLOCK_STATE_COMMITTED) {
        return;
    }
    kv_evict_set_time(policy_of(table, block), kv_time_ns() / 1000);
    kv_evict_touch(policy_of(table, block), &block->evict);
    if (table->committed.head != block) {
        block_list_remove(&table->committed, block);
        block_list_push_head(&table->committed, block);
    }
}

void kv_block_table_pin(kv_block_table_t *table, kv_block_t *block)
{
    assert((block->state == KV_BLOCK_STATE_COMMITTED) ||
           (block->state == KV_BLOCK_STATE_DEAD));
    assert(block->tier == KV_TIER_HOST);
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
    kv_block_t *block = block_find_settled(table, ns_id, key);

    if (block == NULL) {
        return 0;
    }
    kv_evict_remove(policy_of(table, block), &block->evict);
    block_unpublish(table, block, 1);
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
    stats_p->blocks        = table->num_blocks - table->ssd_blocks;
    stats_p->ssd_blocks    = table->ssd_blocks;
    stats_p->ssd_evictions = table->ssd_evictions;
    stats_p->ssd_failures  = table->ssd_failures;
    stats_p->demotions     = table->demotions;
    stats_p->demoted_bytes = table->demoted_bytes;
    stats_p->promotions    = table->promotions;
    stats_p->promoted_bytes = table->promoted_bytes;
    stats_p->ssd_used_bytes = 0;
    if (table->ssd != NULL) {
        kv_ssd_stats_t ssd;
        kv_ssd_stats(table->ssd, &ssd);
        stats_p->ssd_used_bytes = ssd.live_bytes;
    }
}

void kv_block_table_ssd_stats(const kv_block_table_t *table, kv_ssd_stats_t *stats_p)
{
    memset(stats_p, 0, sizeof(*stats_p));
    if (table->ssd != NULL) {
        kv_ssd_stats(table->ssd, stats_p);
    }
}

void kv_block_table_flush(kv_block_table_t *table)
{
    if (table->ssd != NULL) {
        kv_ssd_flush(table->ssd);
    }
}

/* Compaction moved a record, or the store dropped it (its segment was
 * evicted): then the block goes, unless a stage holds it (which sees the
 * lost location). */
static void ssd_moved(void *arg, void *owner, kv_ssd_loc_t loc)
{
    kv_block_table_t *table = arg;
    kv_block_t       *block = owner;

    block->ssd_loc = loc;
    if (loc == KV_SSD_LOC_NONE && block->tier == KV_TIER_SSD && block->pins == 0) {
        table->ssd_evictions++;
        kv_evict_remove(table->ssd_policy, &block->evict);
        block_unpublish(table, block, 0);
    }
}

/* A record recovery found: it becomes an SSD block (the newest record of a key wins). */
static void *ssd_recovered(void *arg, const kv_ssd_meta_t *meta, kv_ssd_loc_t loc)
{
    kv_block_table_t *table = arg;
    kv_block_t       *block, *old, *parent;
    uint32_t          ns_id;

    if (kv_ns_table_id(table->ns, meta->ns, meta->ns_len, 1, &ns_id) != KVP_OK) {
        return NULL;
    }
    old = block_hash_find(table, ns_id, &meta->key);
    if (old != NULL) {
        if (old->ssd_seq > meta->seq) {
            return NULL;
        }
        kv_evict_remove(table->ssd_policy, &old->evict);
        block_unpublish(table, old, 0);
    }
    block             = kv_calloc(1, sizeof(*block), "block");
    block->key        = meta->key;
    block->ns_id      = ns_id;
    block->size       = meta->size;
    block->checksum   = meta->checksum;
    block->parent     = meta->parent;
    block->has_parent = meta->has_parent;
    block->tier       = KV_TIER_SSD;
    block->ssd_loc    = loc;
    block->ssd_seq    = meta->seq;
    block->state      = KV_BLOCK_STATE_COMMITTED;
    block_hash_insert(table, block);
    block_list_push_head(&table->committed, block);
    table->num_blocks++;
    table->ssd_blocks++;
    policy_insert(table, block);
    parent = block->has_parent ? block_hash_find(table, ns_id, &block->parent) : NULL;
    if (parent != NULL) {
        parent->child     = block->key;
        parent->has_child = 1;
    }
    return block;
}

kvp_status_t kv_block_table_open_ssd(kv_block_table_t *table, const kv_ssd_config_t *config,
                                     uint64_t high_bytes, uint64_t low_bytes,
                                     uint64_t *recovered_p)
{
    kvp_status_t status;
    uint64_t     recovered;

    if (table->ssd != NULL || low_bytes > high_bytes ||
        high_bytes > kv_arena_capacity(table->arena)) {
        return KVP_ERR_INVALID_PARAM;
    }
    status = kv_evict_create(kv_evict_name(table->policy), &table->ssd_policy);
    if (status != KVP_OK) {
        return status;
    }
    status = kv_ssd_open(config, ssd_moved, table, &table->ssd);
    if (status != KVP_OK) {
        kv_evict_destroy(table->ssd_policy);
        table->ssd_policy = NULL;
        return status;
    }
    table->high_bytes = high_bytes;
    table->low_bytes  = low_bytes;
    recovered         = kv_ssd_recover(table->ssd, ssd_recovered, table);
    if (recovered_p != NULL) {
        *recovered_p = recovered;
    }
    return KVP_OK;
}

void kv_block_table_balance(kv_block_table_t *table)
{
    uint64_t used;

    if (table->ssd == NULL) {
        return;
    }
    if (!kv_ssd_write_poll(table->ssd)) {
        return; /* still writing: a later call goes on */
    }
    demote_finish(table);
    used = kv_arena_used(table->arena);
    if (used <= table->low_bytes || (!table->draining && used <= table->high_bytes)) {
        table->draining = 0;
        return;
    }
    table->draining = demote(table, used - table->low_bytes, 1) > 0;
}

int kv_block_table_event_fd(const kv_block_table_t *table)
{
    return table->ssd != NULL ? kv_ssd_event_fd(table->ssd) : -1;
}

/* The SSD blocks to stage: those of @p blocks, then the chain after the last. */
static size_t stage_list(kv_block_table_t *table, kv_block_t **blocks, size_t n,
                         size_t readahead, kv_block_t **list)
{
    kv_block_t *last = NULL;
    size_t      m    = 0;

    for (size_t i = 0; i < n; i++) {
        if (blocks[i] != NULL && blocks[i]->tier == KV_TIER_SSD && blocks[i]->pins == 0) {
            blocks[i]->pins = 1; /* marks it listed, and held against compaction loss */
            list[m++]       = blocks[i];
        }
        if (blocks[i] != NULL) {
            last = blocks[i];
        }
    }
    for (size_t r = 0; r < readahead && last != NULL && last->has_child; r++) {
        last = block_hash_find(table, last->ns_id, &last->child);
        if (last != NULL && last->tier == KV_TIER_SSD && last->pins == 0) {
            last->pins = 1;
            list[m++]  = last;
        }
    }
    return m;
}

/* A staged block (read into @p offset) becomes a host block. */
static void block_to_host(kv_block_table_t *table, kv_block_t *block, uint64_t offset)
{
    block_notify(table, 0, block);
    kv_evict_remove(table->ssd_policy, &block->evict);
    kv_ssd_free(table->ssd, block->ssd_loc, 0);
    table->ssd_blocks--;
    table->promotions++;
    table->promoted_bytes += block->size;
    block->tier       = KV_TIER_HOST;
    block->offset     = offset;
    block->alloc_size = kv_arena_alloc_size(table->arena, offset);
    table->used_bytes += block->alloc_size;
    policy_insert(table, block);
    block_notify(table, 1, block);
}

size_t kv_block_table_stage(kv_block_table_t *table, kv_block_t **blocks, size_t n,
                            size_t readahead)
{
    size_t       max = n + readahead, m, k = 0, staged = 0;
    kv_block_t **list;
    uint64_t    *offsets;
    kv_ssd_io_t *ios;
    size_t      *io_of;
    int32_t     *statuses;

    if (table->ssd == NULL || n == 0) {
        return 0;
    }
    list     = kv_calloc(max, sizeof(*list), "stage list");
    offsets  = kv_calloc(max, sizeof(*offsets), "stage offsets");
    ios      = kv_calloc(max, sizeof(*ios), "stage reads");
    io_of    = kv_calloc(max, sizeof(*io_of), "stage read map");
    statuses = kv_calloc(max, sizeof(*statuses), "stage statuses");
    m        = stage_list(table, blocks, n, readahead, list);
    for (size_t j = 0; j < m; j++) {
        kv_evict_pin(table->ssd_policy, &list[j]->evict);
    }
    /* room for all first (demoting others may move records), then the reads */
    for (size_t j = 0; j < m; j++) {
        while ((statuses[j] = kv_arena_alloc(table->arena, list[j]->size, &offsets[j])) ==
                   KVP_ERR_NO_SPACE &&
               block_table_free_some(table, list[j]->size)) {
        }
    }
    for (size_t j = 0; j < m; j++) {
        if (statuses[j] != KVP_OK) {
            continue;
        }
        if (list[j]->ssd_loc == KV_SSD_LOC_NONE) {
            statuses[j] = KVP_ERR_NOT_FOUND; /* the store dropped it meanwhile */
            continue;
        }
        ios[k].loc           = list[j]->ssd_loc;
        ios[k].meta.key      = list[j]->key;
        ios[k].meta.size     = list[j]->size;
        ios[k].meta.checksum = list[j]->checksum;
        ios[k].data          = kv_arena_ptr(table->arena, offsets[j]);
        io_of[k++]           = j;
    }
    kv_ssd_read(table->ssd, ios, k);
    for (size_t r = 0; r < k; r++) {
        statuses[io_of[r]] = ios[r].status;
    }
    for (size_t j = 0; j < m; j++) {
        kv_block_t *block = list[j];

        block->pins = 0;
        kv_evict_unpin(table->ssd_policy, &block->evict);
        if (statuses[j] == KVP_OK) {
            block_to_host(table, block, offsets[j]);
            continue;
        }
        if (statuses[j] == KVP_ERR_NO_SPACE) {
            continue; /* it stays on SSD */
        }
        kv_arena_free(table->arena, offsets[j]);
        if (statuses[j] == KVP_ERR_NOT_FOUND) {
            table->ssd_evictions++;
        } else {
            table->ssd_failures++;
            kv_log_warn("a block on SSD could not be read back (%s): dropped",
                        kvp_status_string((kvp_status_t)statuses[j]));
        }
        kv_evict_remove(table->ssd_policy, &block->evict);
        block_unpublish(table, block, 1);
    }
    /* report per requested block (pointers compared only: some were freed) */
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; blocks[i] != NULL && j < m; j++) {
            if (list[j] == blocks[i]) {
                staged += statuses[j] == KVP_OK;
                blocks[i] = statuses[j] == KVP_OK ? blocks[i] : NULL;
                break;
            }
        }
    }
    kv_free(list);
    kv_free(offsets);
    kv_free(ios);
    kv_free(io_of);
    kv_free(statuses);
    return staged;
}
