/* Unit tests of common/: key hashing, checksums, sizes, addresses, config. */
#include <kv/config.h>
#include <kv/hash.h>
#include <kv/text.h>
#include <kv/util.h>

#include <netinet/in.h>
#include <stdlib.h>

#include "test.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

/* kv_key_chain hashes parent || tokens as little-endian uint32. */
static void test_key_chain_layout(void)
{
    kvp_key_t parent = kv_key_hash("parent", 6);
    uint32_t  tokens[3] = {1, 0x01020304u, 0xffffffffu};
    uint8_t   raw[16 + 12];
    kvp_key_t direct, chained;

    memcpy(raw, parent.bytes, 16);
    for (int i = 0; i < 3; i++) {
        raw[16 + 4 * i]     = (uint8_t)tokens[i];
        raw[16 + 4 * i + 1] = (uint8_t)(tokens[i] >> 8);
        raw[16 + 4 * i + 2] = (uint8_t)(tokens[i] >> 16);
        raw[16 + 4 * i + 3] = (uint8_t)(tokens[i] >> 24);
    }
    direct  = kv_key_hash(raw, sizeof(raw));
    chained = kv_key_chain(&parent, tokens, 3);
    ASSERT(memcmp(direct.bytes, chained.bytes, 16) == 0);

    /* no parent means sixteen zero bytes */
    memset(raw, 0, 16);
    direct  = kv_key_hash(raw, sizeof(raw));
    chained = kv_key_chain(NULL, tokens, 3);
    ASSERT(memcmp(direct.bytes, chained.bytes, 16) == 0);
}

/* Long token runs are hashed in pieces: the result must not depend on it. */
static void test_key_chain_long(void)
{
    enum { N = 1000 };
    uint32_t  tokens[N];
    uint8_t   raw[16 + 4 * N] = {0};
    kvp_key_t direct, chained;

    for (int i = 0; i < N; i++) {
        tokens[i] = (uint32_t)(i * 2654435761u);
        memcpy(raw + 16 + 4 * i, &tokens[i], 4); /* x86 is little-endian */
    }
    direct  = kv_key_hash(raw, sizeof(raw));
    chained = kv_key_chain(NULL, tokens, N);
    ASSERT(memcmp(direct.bytes, chained.bytes, 16) == 0);
}

static void test_key_hash_is_xxh3_128(void)
{
    const char          *text = "kvpool block key";
    XXH128_hash_t        h    = XXH3_128bits(text, strlen(text));
    XXH128_canonical_t   canon;
    kvp_key_t            key = kv_key_hash(text, strlen(text));
    char                 hex[33];

    XXH128_canonicalFromHash(&canon, h);
    ASSERT(memcmp(key.bytes, canon.digest, 16) == 0);
    ASSERT_EQ(kv_checksum(text, strlen(text)), XXH3_64bits(text, strlen(text)));
    kv_key_hex(&key, hex);
    ASSERT_EQ(strlen(hex), 32);
    ASSERT_EQ(strspn(hex, "0123456789abcdef"), 32);
}

static void test_size_parse(void)
{
    uint64_t size = 0;

    ASSERT_OK(kv_size_parse("4096", &size));
    ASSERT_EQ(size, 4096);
    ASSERT_OK(kv_size_parse("256MiB", &size));
    ASSERT_EQ(size, 256ull << 20);
    ASSERT_OK(kv_size_parse("2g", &size));
    ASSERT_EQ(size, 2ull << 30);
    ASSERT_OK(kv_size_parse("1TiB", &size));
    ASSERT_EQ(size, 1ull << 40);
    size = 7;
    ASSERT_STATUS(kv_size_parse("", &size), KVP_ERR_INVALID_PARAM);
    ASSERT_STATUS(kv_size_parse("-1", &size), KVP_ERR_INVALID_PARAM);
    ASSERT_STATUS(kv_size_parse("12 MiB", &size), KVP_ERR_INVALID_PARAM);
    ASSERT_STATUS(kv_size_parse("5PiB", &size), KVP_ERR_INVALID_PARAM);
    ASSERT_STATUS(kv_size_parse("99999999999999999999", &size), KVP_ERR_INVALID_PARAM);
    ASSERT_STATUS(kv_size_parse("17179869184TiB", &size), KVP_ERR_INVALID_PARAM);
    ASSERT_EQ(size, 7); /* untouched on error */
}

static void test_addr_parse(void)
{
    struct sockaddr_storage addr;
    socklen_t               len;

    ASSERT_OK(kv_addr_parse("127.0.0.1:7070", &addr, &len));
    ASSERT_EQ(addr.ss_family, AF_INET);
    ASSERT_EQ(ntohs(((struct sockaddr_in *)&addr)->sin_port), 7070);
    ASSERT(kv_addr_is_loopback((struct sockaddr *)&addr));
    ASSERT_OK(kv_addr_parse("[::1]:80", &addr, &len));
    ASSERT_EQ(addr.ss_family, AF_INET6);
    ASSERT(kv_addr_is_loopback((struct sockaddr *)&addr));
    ASSERT_OK(kv_addr_parse("10.1.2.3:1", &addr, &len));
    ASSERT(!kv_addr_is_loopback((struct sockaddr *)&addr));
    ASSERT_STATUS(kv_addr_parse("127.0.0.1", &addr, &len), KVP_ERR_INVALID_PARAM);
    ASSERT_STATUS(kv_addr_parse("127.0.0.1:", &addr, &len), KVP_ERR_INVALID_PARAM);
    ASSERT_STATUS(kv_addr_parse("127.0.0.1:70000", &addr, &len), KVP_ERR_INVALID_PARAM);
    ASSERT_STATUS(kv_addr_parse("127.0.0.1:7x", &addr, &len), KVP_ERR_INVALID_PARAM);
    ASSERT_STATUS(kv_addr_parse(":7070", &addr, &len), KVP_ERR_INVALID_PARAM);
    ASSERT_STATUS(kv_addr_parse("[::1:80", &addr, &len), KVP_ERR_INVALID_PARAM);
}

static void test_status_strings(void)
{
    for (int s = -100; s <= 1; s++) {
        ASSERT(kvp_status_string((kvp_status_t)s) != NULL);
    }
    ASSERT(strcmp(kvp_status_string(KVP_ERR_AUTH), "authentication failed") == 0);
    ASSERT(strcmp(kvp_status_string((kvp_status_t)-99), "unknown status") == 0);
    ASSERT(KVP_STATUS_IS_CONNECTION_ERROR(KVP_ERR_CONNECTION_LOST));
    ASSERT(!KVP_STATUS_IS_CONNECTION_ERROR(KVP_ERR_NOT_FOUND));
    ASSERT(!KVP_STATUS_IS_CONNECTION_ERROR(KVP_ERR_SHUTDOWN));
}

typedef struct {
    int  entries;
    char last[256];
} config_seen_t;

static kvp_status_t count_entry(const char *section, const char *key,
                                const char *value, void *arg, char *err,
                                size_t err_len)
{
    config_seen_t *seen = arg;

    if (strcmp(key, "bad") == 0) {
        snprintf(err, err_len, "bad is not allowed");
        return KVP_ERR_CONFIG;
    }
    seen->entries++;
    snprintf(seen->last, sizeof(seen->last), "%s.%s=%s", section, key, value);
    return KVP_OK;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    ASSERT(f != NULL);
    fputs(text, f);
    fclose(f);
}

static void test_config_load(void)
{
    char          dir[] = "/tmp/kvtest-XXXXXX";
    char          path[128], err[256], *big;
    config_seen_t seen = {0};

    ASSERT(mkdtemp(dir) != NULL);
    snprintf(path, sizeof(path), "%s/a.ini", dir);

    write_file(path, "; comment\n[node]\nport = 7070\nmemory = 1GiB\n");
    ASSERT_OK(kv_config_load(path, count_entry, &seen, err, sizeof(err)));
    ASSERT_EQ(seen.entries, 2);
    ASSERT(strcmp(seen.last, "node.memory=1GiB") == 0);

    write_file(path, "[node]\nport = 1\nbad = 2\n");
    ASSERT_STATUS(kv_config_load(path, count_entry, &seen, err, sizeof(err)),
                  KVP_ERR_CONFIG);
    ASSERT(strstr(err, ":3:") != NULL && strstr(err, "bad is not allowed") != NULL);

    write_file(path, "[node\nport = 1\n");
    ASSERT_STATUS(kv_config_load(path, count_entry, &seen, err, sizeof(err)),
                  KVP_ERR_CONFIG);
    ASSERT(strstr(err, ":1:") != NULL);

    /* a line longer than the limit is refused with its number, not split */
    big = malloc(KV_CONFIG_LINE_MAX + 64);
    strcpy(big, "[node]\n\ntoken = ");
    memset(big + 16, 'x', KV_CONFIG_LINE_MAX);
    big[16 + KV_CONFIG_LINE_MAX] = '\0'; /* the line is 8 bytes too long */
    write_file(path, big);
    ASSERT_STATUS(kv_config_load(path, count_entry, &seen, err, sizeof(err)),
                  KVP_ERR_CONFIG);
    ASSERT(strstr(err, ":3: line longer") != NULL);
    /* exactly the limit is fine */
    strcpy(big, "[node]\ntoken = ");
    memset(big + strlen(big), 'y', KV_CONFIG_LINE_MAX - strlen("token = "));
    big[7 + KV_CONFIG_LINE_MAX] = '\n';
    big[7 + KV_CONFIG_LINE_MAX + 1] = '\0';
    write_file(path, big);
    free(big);
    ASSERT_OK(kv_config_load(path, count_entry, &seen, err, sizeof(err)));
    ASSERT_EQ(strlen(seen.last), strlen("node.token=") + KV_CONFIG_LINE_MAX - 8);

    snprintf(path, sizeof(path), "%s/missing.ini", dir);
    ASSERT_STATUS(kv_config_load(path, count_entry, &seen, err, sizeof(err)),
                  KVP_ERR_IO);
    ASSERT(strstr(err, "No such file") != NULL);
}

/* Prometheus text: label escaping, sample formats, cumulative buckets. */
static void test_prom_text(void)
{
    static const double bounds[] = {1, 10};
    kv_text_t           t        = {0};
    kv_histogram_t      h;
    char                l[64]    = "";

    kv_prom_label(l, sizeof(l), "ns", "a\"b\\c\nd");
    ASSERT(strcmp(l, "ns=\"a\\\"b\\\\c\\nd\"") == 0);
    kv_prom_label(l, sizeof(l), "tier", "host");
    ASSERT(strcmp(l, "ns=\"a\\\"b\\\\c\\nd\",tier=\"host\"") == 0);
    memset(l, 0, sizeof(l));
    kv_prom_label(l, 12, "key", "a-long-value"); /* cut, still well-formed */
    ASSERT(strcmp(l, "key=\"a-lon\"") == 0);
    kv_prom_label(l, 12, "more", "x"); /* no room: unchanged */
    ASSERT(strcmp(l, "key=\"a-lon\"") == 0);

    kv_prom_family(&t, "m_total", "counter", "Help.");
    kv_prom_sample(&t, "m_total", NULL, 3);
    kv_prom_sample(&t, "m_total", "x=\"1\"", 0.25);
    ASSERT(strcmp(t.buf, "# HELP m_total Help.\n# TYPE m_total counter\nm_total 3\n"
                         "m_total{x=\"1\"} 0.25\n") == 0);
    kv_text_free(&t);

    kv_histogram_init(&h, bounds, 2);
    kv_histogram_observe(&h, 0.5);
    kv_histogram_observe(&h, 1);  /* le is inclusive */
    kv_histogram_observe(&h, 5);
    kv_histogram_observe(&h, 50);
    kv_prom_histogram(&t, "d", NULL, &h);
    ASSERT(strstr(t.buf, "d_bucket{le=\"1\"} 2\n") != NULL);
    ASSERT(strstr(t.buf, "d_bucket{le=\"10\"} 3\n") != NULL);
    ASSERT(strstr(t.buf, "d_bucket{le=\"+Inf\"} 4\n") != NULL);
    ASSERT(strstr(t.buf, "d_sum 56.5\n") != NULL);
    ASSERT(strstr(t.buf, "d_count 4\n") != NULL);
    kv_text_free(&t);
}

KV_TEST_MAIN(KV_TEST(test_prom_text), KV_TEST(test_key_chain_layout), KV_TEST(test_key_chain_long),
             KV_TEST(test_key_hash_is_xxh3_128), KV_TEST(test_size_parse),
             KV_TEST(test_addr_parse), KV_TEST(test_status_strings),
             KV_TEST(test_config_load))
