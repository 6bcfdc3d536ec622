/**
 * @file hash.h
 * @brief Block checksums (XXH3-64) and chained block keys (XXH3-128).
 */
#ifndef KV_HASH_H
#define KV_HASH_H

#include <kvpool/kvpool.h>

#include <stddef.h>
#include <stdint.h>

/** XXH3-64 of @p len bytes: the checksum stored with every block. */
uint64_t kv_checksum(const void *data, size_t len);

/**
 * Copy @p len bytes from @p src to @p dst and return the XXH3-64 of them,
 * a cache-sized piece at a time: each piece is hashed while it is still in
 * cache from the copy, so the bytes cross memory once instead of twice.
 * The buffers must not overlap.
 */
uint64_t kv_copy_checksum(void *dst, const void *src, size_t len);

/** XXH3-128 of @p len bytes, as a key (big-endian byte order). */
kvp_key_t kv_key_hash(const void *data, size_t len);

/** key = XXH3-128(parent || tokens as little-endian uint32). */
kvp_key_t kv_key_chain(const kvp_key_t *parent, const uint32_t *tokens,
                       size_t num_tokens);

/** Write the key as 32 lowercase hex digits plus NUL into @p out[33]. */
void kv_key_hex(const kvp_key_t *key, char out[33]);

/** A 64-bit mix of the key, for hash tables. */
static inline uint64_t kv_key_hash64(const kvp_key_t *key)
{
    uint64_t h;
    __builtin_memcpy(&h, key->bytes, sizeof(h));
    return h;
}

#endif
