#include <kv/hash.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include <string.h>

static kvp_key_t key_from_xxh128(XXH128_hash_t h)
{
    XXH128_canonical_t canon;
    kvp_key_t          key;

    XXH128_canonicalFromHash(&canon, h);
    memcpy(key.bytes, canon.digest, sizeof(key.bytes));
    return key;
}

kvp_key_t kv_key_hash(const void *data, size_t len)
{
    return key_from_xxh128(XXH3_128bits(data, len));
}

kvp_key_t kv_key_chain(const kvp_key_t *parent, const uint32_t *tokens,
                       size_t num_tokens)
{
    static const kvp_key_t zero;
    XXH3_state_t           state;
    uint8_t                le[4 * 64];

    XXH3_128bits_reset(&state);
    XXH3_128bits_update(&state, (parent ? parent : &zero)->bytes, KVP_KEY_LEN);
    /* hash tokens in a fixed little-endian layout, whatever the host order */
    while (num_tokens > 0) {
        size_t n = num_tokens < 64 ? num_tokens : 64;
        for (size_t i = 0; i < n; i++) {
            le[4 * i + 0] = (uint8_t)(tokens[i]);
            le[4 * i + 1] = (uint8_t)(tokens[i] >> 8);
            le[4 * i + 2] = (uint8_t)(tokens[i] >> 16);
            le[4 * i + 3] = (uint8_t)(tokens[i] >> 24);
        }
        XXH3_128bits_update(&state, le, 4 * n);
        tokens += n;
        num_tokens -= n;
    }
    return key_from_xxh128(XXH3_128bits_digest(&state));
}

void kv_key_hex(const kvp_key_t *key, char out[33])
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < KVP_KEY_LEN; i++) {
        out[2 * i]     = digits[key->bytes[i] >> 4];
        out[2 * i + 1] = digits[key->bytes[i] & 15];
    }
    out[32] = '\0';
}
