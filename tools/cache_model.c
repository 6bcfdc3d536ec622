/*
 * A simulated node's block store (cache_model.h): blocks in a chained hash
 * table (grown by doubling), each with its eviction-policy entry; every
 * store and eviction is recorded at the store's location in the index.
 */
#include "cache_model.h"

#include <kv/alloc.h>
#include <kv/hash.h>
#include <kv/util.h>
#include <kvstore/evict.h>

#include <assert.h>
#include <string.h>

#define INITIAL_BUCKETS 4096

/* A stored block: its policy entry and its key. */
typedef struct model_block {
    kv_evict_entry_t    evict;
    kvp_key_t           key;
    struct model_block *hash_next;
} model_block_t;

struct kv_cache_model {
    kv_prefix_index_t *index;
    uint32_t           ns;
    uint32_t           loc;
    kv_evict_t        *policy;
    model_block_t    **buckets;
    size_t             num_buckets; /* a power of two */
    size_t             num_blocks;
    uint64_t           capacity; /* 0 = no limit */
    uint64_t           evictions;
};

static uint64_t key_hash(const kvp_key_t *key)
{
    /* splitmix64 finaliser over the key's first word */
    uint64_t h = kv_key_hash64(key);

    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebull;
    return h ^ (h >> 31);
}

static model_block_t **bucket_of(const kv_cache_model_t *m, const kvp_key_t *key)
{
    return &m->buckets[key_hash(key) & (m->num_buckets - 1)];
}

static model_block_t *find(const kv_cache_model_t *m, const kvp_key_t *key)
{
    for (model_block_t *b = *bucket_of(m, key); b != NULL; b = b->hash_next) {
        if (memcmp(b->key.bytes, key->bytes, KVP_KEY_LEN) == 0) {
            return b;
        }
    }
    return NULL;
}

static void grow(kv_cache_model_t *m)
{
    model_block_t **old     = m->buckets;
    size_t          old_len = m->num_buckets;

    m->num_buckets *= 2;
    m->buckets = kv_calloc(m->num_buckets, sizeof(*m->buckets), "cache model hash");
    for (size_t i = 0; i < old_len; i++) {
        model_block_t *b, *next;
        for (b = old[i]; b != NULL; b = next) {
            model_block_t **bucket = bucket_of(m, &b->key);
            next                   = b->hash_next;
            b->hash_next           = *bucket;
            *bucket                = b;
        }
    }
    kv_free(old);
}

kvp_status_t kv_cache_model_create(kv_prefix_index_t *index, uint32_t ns_id, uint32_t loc,
                                   const char *policy, uint64_t capacity,
                                   kv_cache_model_t **model_p)
{
    kv_cache_model_t *m = kv_calloc(1, sizeof(*m), "cache model");
    kvp_status_t      status;

    status = kv_evict_create(policy, &m->policy);
    if (status != KVP_OK) {
        kv_free(m);
        return status;
    }
    m->index       = index;
    m->ns          = ns_id;
    m->loc         = loc;
    m->capacity    = capacity;
    m->num_buckets = INITIAL_BUCKETS;
    m->buckets     = kv_calloc(m->num_buckets, sizeof(*m->buckets), "cache model hash");
    *model_p       = m;
    return KVP_OK;
}

void kv_cache_model_destroy(kv_cache_model_t *m)
{
    if (m == NULL) {
        return;
    }
    for (size_t i = 0; i < m->num_buckets; i++) {
        model_block_t *b, *next;
        for (b = m->buckets[i]; b != NULL; b = next) {
            next = b->hash_next;
            kv_free(b);
        }
    }
    kv_free(m->buckets);
    kv_evict_destroy(m->policy);
    kv_free(m);
}

const char *kv_cache_model_policy(const kv_cache_model_t *m)
{
    return kv_evict_name(m->policy);
}

void kv_cache_model_set_time(kv_cache_model_t *m, uint64_t now)
{
    kv_evict_set_time(m->policy, now);
}

/* Evict the policy's victim: out of the index and freed. */
static void evict_one(kv_cache_model_t *m)
{
    kv_evict_entry_t *entry = kv_evict_pop(m->policy);
    model_block_t    *victim, **link;

    assert(entry != NULL); /* nothing is pinned here */
    victim = kv_container_of(entry, model_block_t, evict);
    kv_index_remove(m->index, m->ns, &victim->key, m->loc);
    link = bucket_of(m, &victim->key);
    while (*link != victim) {
        link = &(*link)->hash_next;
    }
    *link = victim->hash_next;
    kv_free(victim);
    m->num_blocks--;
    m->evictions++;
}

/* Store keys[i] (not stored now), whose parent is keys[i - 1]. */
static kvp_status_t store(kv_cache_model_t *m, const kvp_key_t *keys, size_t i,
                          unsigned flags)
{
    const kvp_key_t *parent_key = i > 0 ? &keys[i - 1] : NULL;
    model_block_t   *parent     = i > 0 ? find(m, parent_key) : NULL;
    model_block_t   *block, **bucket;
    kvp_status_t     status;

    status = kv_index_store(m->index, m->ns, &keys[i], parent_key, m->loc);
    if (status != KVP_OK) {
        return status;
    }
    if (m->num_blocks >= m->num_buckets) {
        grow(m);
    }
    block            = kv_malloc(sizeof(*block), "cache model block");
    block->key       = keys[i];
    bucket           = bucket_of(m, &block->key);
    block->hash_next = *bucket;
    *bucket          = block;
    kv_evict_insert_flags(m->policy, &block->evict,
                          parent != NULL ? &parent->evict : NULL, key_hash(&block->key),
                          flags);
    m->num_blocks++;
    while (m->capacity > 0 && m->num_blocks > m->capacity) {
        evict_one(m);
    }
    return KVP_OK;
}

kvp_status_t kv_cache_model_use(kv_cache_model_t *m, const kvp_key_t *keys, size_t count,
                                int partial_last)
{
    for (size_t i = 0; i < count; i++) {
        model_block_t *block = find(m, &keys[i]);
        unsigned       flags = partial_last && i + 1 == count ? KV_EVICT_PARTIAL : 0;
        kvp_status_t   status;

        if (block != NULL) {
            kv_evict_touch_flags(m->policy, &block->evict, flags);
            continue;
        }
        status = store(m, keys, i, flags);
        if (status != KVP_OK) {
            return status;
        }
    }
    return KVP_OK;
}

size_t kv_cache_model_prefix(const kv_cache_model_t *m, const kvp_key_t *keys,
                             size_t count)
{
    size_t i = 0;

    while (i < count && find(m, &keys[i]) != NULL) {
        i++;
    }
    return i;
}

size_t kv_cache_model_blocks(const kv_cache_model_t *m)
{
    return m->num_blocks;
}

uint64_t kv_cache_model_evictions(const kv_cache_model_t *m)
{
    return m->evictions;
}
