/*
 * Tests of tools/workload.c: the chat generator and the Mooncake trace
 * reader.
 */
#include "test.h"
#include "test_util.h"

#include "workload.h"

#include <kvpool/kvpool.h>

#include <errno.h>
#include <limits.h>

/* ----------------------------------------------------------------- helpers */

/* A copy of one request, keys included. */
typedef struct {
    kv_request_t req;
    kvp_key_t   *keys;
} saved_req_t;

static void save_req(saved_req_t *dst, const kv_request_t *req)
{
    dst->req  = *req;
    dst->keys = malloc((req->num_keys + 1) * sizeof(kvp_key_t));
    ASSERT(dst->keys != NULL);
    if (req->num_keys > 0) {
        memcpy(dst->keys, req->keys, req->num_keys * sizeof(kvp_key_t));
    }
    dst->req.keys = dst->keys;
}

static void free_reqs(saved_req_t *reqs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(reqs[i].keys);
    }
    free(reqs);
}

/* Run a generator for @p n requests and keep copies of them. */
static saved_req_t *generate(const kv_workload_params_t *params, size_t n)
{
    kv_workload_t *wl   = NULL;
    saved_req_t   *reqs = calloc(n, sizeof(*reqs));

    ASSERT(reqs != NULL);
    ASSERT_OK(kv_workload_generator_create(params, &wl));
    for (size_t i = 0; i < n; i++) {
        kv_request_t req;
        ASSERT_OK(kv_workload_next(wl, &req));
        save_req(&reqs[i], &req);
    }
    ASSERT_EQ(strcmp(kv_workload_error(wl), ""), 0);
    kv_workload_destroy(wl);
    return reqs;
}

/* Number of leading keys two requests share. */
static size_t common_prefix(const kv_request_t *a, const kv_request_t *b)
{
    size_t n = a->num_keys < b->num_keys ? a->num_keys : b->num_keys;
    size_t i = 0;

    while (i < n && key_eq(&a->keys[i], &b->keys[i])) {
        i++;
    }
    return i;
}

static int req_eq(const kv_request_t *a, const kv_request_t *b)
{
    return a->timestamp_ms == b->timestamp_ms &&
           a->input_tokens == b->input_tokens &&
           a->output_tokens == b->output_tokens &&
           a->num_keys == b->num_keys && common_prefix(a, b) == a->num_keys;
}

static kvp_key_t id_key(uint64_t id)
{
    uint8_t le[8];

    for (int b = 0; b < 8; b++) {
        le[b] = (uint8_t)(id >> (8 * b));
    }
    return kvp_key_from_bytes(le, sizeof(le));
}

/* A scratch directory for trace files, removed by tmp_cleanup(). */
typedef struct {
    char dir[64];
    char files[32][128];
    int  count;
} tmp_t;

static void tmp_init(tmp_t *tmp)
{
    memset(tmp, 0, sizeof(*tmp));
    snprintf(tmp->dir, sizeof(tmp->dir), "/tmp/kvp_workload_XXXXXX");
    ASSERT(mkdtemp(tmp->dir) != NULL);
}

/* Write @p len bytes to a new file; returns its path (owned by @p tmp). */
static const char *tmp_write(tmp_t *tmp, const char *data, size_t len)
{
    char  name[sizeof(tmp->files[0])];
    char *path;
    FILE *fp;

    ASSERT(tmp->count < 32);
    path = tmp->files[tmp->count];
    snprintf(name, sizeof(name), "%s/trace%d.jsonl", tmp->dir, tmp->count);
    memcpy(path, name, sizeof(name));
    tmp->count++;
    fp = fopen(path, "w");
    ASSERT(fp != NULL);
    /* (ASSERT_EQ evaluates its arguments again on failure: no side effects) */
    ASSERT(fwrite(data, 1, len, fp) == len);
    ASSERT(fclose(fp) == 0);
    return path;
}

static const char *tmp_write_str(tmp_t *tmp, const char *data)
{
    return tmp_write(tmp, data, strlen(data));
}

static void tmp_cleanup(tmp_t *tmp)
{
    for (int i = 0; i < tmp->count; i++) {
        unlink(tmp->files[i]);
    }
    ASSERT(rmdir(tmp->dir) == 0);
}

static kv_workload_t *open_trace(const char *path)
{
    kv_workload_t *wl = NULL;
    char           err[256];

    ASSERT_OK(kv_workload_trace_open(path, &wl, err, sizeof(err)));
    ASSERT(wl != NULL);
    return wl;
}

/* ------------------------------------------------------------- generator */

static void test_generator_determinism(void)
{
    kv_workload_params_t p   = {.seed = 42};
    const size_t         n   = 2000;
    saved_req_t         *a   = generate(&p, n);
    saved_req_t         *b   = generate(&p, n);
    saved_req_t         *c;
    size_t               same = 0;

    for (size_t i = 0; i < n; i++) {
        ASSERT(req_eq(&a[i].req, &b[i].req));
    }
    p.seed = 43;
    c      = generate(&p, n);
    for (size_t i = 0; i < n; i++) {
        same += req_eq(&a[i].req, &c[i].req);
    }
    ASSERT_EQ(same, 0);
    free_reqs(a, n);
    free_reqs(b, n);
    free_reqs(c, n);
}

static void test_generator_shape(void)
{
    kv_workload_params_t p = {.seed = 7};
    const size_t         n = 5000;
    saved_req_t         *r = generate(&p, n);
    uint64_t             prev = 0, in_sum = 0, out_sum = 0;

    for (size_t i = 0; i < n; i++) {
        const kv_request_t *q = &r[i].req;

        ASSERT_LE(prev, q->timestamp_ms);
        prev = q->timestamp_ms;
        ASSERT_EQ(q->num_keys, q->input_tokens / 256); /* default block */
        ASSERT_LE(256 + 50, q->input_tokens);          /* system + user */
        ASSERT_LE(q->input_tokens, KV_WORKLOAD_GEN_MAX_TOKENS);
        ASSERT_LE(20, q->output_tokens);
        ASSERT_LE(q->output_tokens, 800);
        in_sum += q->input_tokens;
        out_sum += q->output_tokens;
    }
    /* Poisson arrivals, mean gap 50 ms */
    ASSERT_LE(n * 45, prev);
    ASSERT_LE(prev, n * 55);
    /* multi-turn prompts are much longer than single messages */
    ASSERT_LE(2000, in_sum / n);
    ASSERT_LE(out_sum / n, 800);
    free_reqs(r, n);

    /* block size and other parameters are honoured */
    p = (kv_workload_params_t){.seed = 7, .block_tokens = 16,
                               .conversations = 3, .system_prompts = 1};
    r = generate(&p, 200);
    for (size_t i = 0; i < 200; i++) {
        ASSERT_EQ(r[i].req.num_keys, r[i].req.input_tokens / 16);
        /* one system prompt: every request starts with the same block */
        ASSERT(key_eq(&r[i].req.keys[0], &r[0].req.keys[0]));
    }
    free_reqs(r, 200);
}

static void test_generator_params(void)
{
    kv_workload_t       *wl = (kv_workload_t *)&wl; /* sentinel */
    kv_workload_params_t p  = {0};

    ASSERT_STATUS(kv_workload_generator_create(&p, NULL), KVP_ERR_INVALID_PARAM);
    p.block_tokens = KV_WORKLOAD_GEN_MAX_BLOCK_TOKENS + 1;
    ASSERT_STATUS(kv_workload_generator_create(&p, &wl), KVP_ERR_INVALID_PARAM);
    p.block_tokens  = 0;
    p.conversations = KV_WORKLOAD_GEN_MAX_CONVERSATIONS + 1;
    ASSERT_STATUS(kv_workload_generator_create(&p, &wl), KVP_ERR_INVALID_PARAM);
    p.conversations  = 0;
    p.system_prompts = KV_WORKLOAD_GEN_MAX_SYSTEM_PROMPTS + 1;
    ASSERT_STATUS(kv_workload_generator_create(&p, &wl), KVP_ERR_INVALID_PARAM);
    ASSERT(wl == (kv_workload_t *)&wl); /* untouched on failure */

    /* NULL params: all defaults; the largest block size works */
    ASSERT_OK(kv_workload_generator_create(NULL, &wl));
    kv_workload_destroy(wl);
    p = (kv_workload_params_t){.block_tokens = KV_WORKLOAD_GEN_MAX_BLOCK_TOKENS,
                               .conversations = 2};
    ASSERT_OK(kv_workload_generator_create(&p, &wl));
    for (int i = 0; i < 500; i++) {
        kv_request_t req;
        ASSERT_OK(kv_workload_next(wl, &req));
        ASSERT_EQ(req.num_keys, req.input_tokens / KV_WORKLOAD_GEN_MAX_BLOCK_TOKENS);
        ASSERT_LE(req.input_tokens, KV_WORKLOAD_GEN_MAX_TOKENS);
    }
    ASSERT_STATUS(kv_workload_next(wl, NULL), KVP_ERR_INVALID_PARAM);
    kv_workload_destroy(wl);
    kv_workload_destroy(NULL);
    ASSERT_EQ(strcmp(kv_workload_error(NULL), ""), 0);
}

/* One conversation at a time: each turn extends the previous one. */
static void test_generator_turns_extend(void)
{
    /* 16-token blocks: a user message (>= 50 tokens) adds >= 3 blocks, so a
     * full-prefix match means the same conversation, not just the same
     * system prompt */
    kv_workload_params_t p = {.seed = 3, .block_tokens = 16,
                              .conversations = 1, .system_prompts = 4};
    const size_t         n = 400;
    saved_req_t         *r = generate(&p, n);
    size_t               cont = 0, fresh = 0;

    for (size_t i = 0; i + 1 < n; i++) {
        const kv_request_t *a = &r[i].req, *b = &r[i + 1].req;

        if (b->num_keys > a->num_keys && common_prefix(a, b) == a->num_keys) {
            /* next turn: previous prompt + its answer + a new message */
            uint32_t user = b->input_tokens - a->input_tokens - a->output_tokens;
            ASSERT_LE(a->input_tokens + a->output_tokens + 50, b->input_tokens);
            ASSERT_LE(user, 2000);
            cont++;
        } else {
            fresh++;
        }
    }
    /* conversations last 1..10 turns: about 4 in 5 requests continue one */
    ASSERT_LE(n / 2, cont);
    ASSERT_LE(n / 20, fresh);
    free_reqs(r, n);
}

/* Interleaved conversations: later turns find their earlier turns, and
 * conversations share their system prompt blocks. */
static void test_generator_prefix_sharing(void)
{
    kv_workload_params_t p = {.seed = 11, .block_tokens = 16,
                              .conversations = 8, .system_prompts = 3};
    const size_t         n = 600;
    saved_req_t         *r = generate(&p, n);
    size_t               extended = 0;
    kvp_key_t            firsts[8];
    size_t               sys_len[8], members[8];
    size_t               groups = 0;

    for (size_t j = 0; j < n; j++) {
        const kv_request_t *b = &r[j].req;
        size_t              g;

        /* an earlier turn of the same conversation is a whole prefix, longer
         * than any system prompt (8 blocks) */
        for (size_t i = j; i-- > 0;) {
            const kv_request_t *a = &r[i].req;
            if (a->num_keys > 8 && a->num_keys < b->num_keys &&
                common_prefix(a, b) == a->num_keys) {
                extended++;
                break;
            }
        }
        /* group by system prompt (the first block) */
        for (g = 0; g < groups; g++) {
            if (key_eq(&firsts[g], &b->keys[0])) {
                break;
            }
        }
        if (g == groups) {
            ASSERT_LE(groups + 1, 3); /* at most system_prompts prompts */
            firsts[g]  = b->keys[0];
            sys_len[g] = b->num_keys;
            members[g] = j;
            groups++;
        } else {
            size_t c = common_prefix(b, &r[members[g]].req);
            if (c < sys_len[g]) {
                sys_len[g] = c;
            }
        }
    }
    ASSERT_LE(n / 2, extended);
    ASSERT_LE(2, groups);
    for (size_t g = 0; g < groups; g++) {
        /* the blocks every member shares are the system prompt: 1..8 */
        ASSERT_LE(1, sys_len[g]);
        ASSERT_LE(sys_len[g], 8);
    }
    /* and every request of a group carries those blocks plus its own */
    for (size_t j = 0; j < n; j++) {
        for (size_t g = 0; g < groups; g++) {
            if (key_eq(&firsts[g], &r[j].req.keys[0])) {
                ASSERT_LE(sys_len[g] + 3, r[j].req.num_keys);
                ASSERT_LE(sys_len[g], common_prefix(&r[j].req, &r[members[g]].req));
            }
        }
    }
    free_reqs(r, n);
}

/* ----------------------------------------------------------------- traces */

static void test_trace_good(void)
{
    tmp_t          tmp;
    kv_workload_t *wl;
    kv_request_t   req;
    const char    *path;

    tmp_init(&tmp);
    path = tmp_write_str(&tmp,
        "{\"timestamp\": 0, \"input_length\": 1000, \"output_length\": 7, \"hash_ids\": [0, 1]}\n"
        "{\"hash_ids\": [0, 1, 2], \"output_length\": 0, \"input_length\": 1025, \"timestamp\": 5, \"extra\": \"x\"}\r\n"
        "{\"timestamp\": 9, \"input_length\": 0, \"output_length\": 3, \"hash_ids\": []}\n"
        "{\"timestamp\": 4294967296000, \"input_length\": 512, \"output_length\": 1, \"hash_ids\": [9223372036854775807]}");
    wl = open_trace(path);

    ASSERT_OK(kv_workload_next(wl, &req));
    ASSERT_EQ(req.timestamp_ms, 0);
    ASSERT_EQ(req.input_tokens, 1000);
    ASSERT_EQ(req.output_tokens, 7);
    ASSERT_EQ(req.num_keys, 2);
    ASSERT(memcmp(req.keys[0].bytes, id_key(0).bytes, KVP_KEY_LEN) == 0);
    ASSERT(memcmp(req.keys[1].bytes, id_key(1).bytes, KVP_KEY_LEN) == 0);
    ASSERT(!key_eq(&req.keys[0], &req.keys[1]));

    ASSERT_OK(kv_workload_next(wl, &req));
    ASSERT_EQ(req.timestamp_ms, 5);
    ASSERT_EQ(req.input_tokens, 1025);
    ASSERT_EQ(req.output_tokens, 0);
    ASSERT_EQ(req.num_keys, 3);
    for (size_t i = 0; i < 3; i++) {
        kvp_key_t want = id_key(i);
        ASSERT(key_eq(&req.keys[i], &want));
    }

    ASSERT_OK(kv_workload_next(wl, &req));
    ASSERT_EQ(req.timestamp_ms, 9);
    ASSERT_EQ(req.input_tokens, 0);
    ASSERT_EQ(req.num_keys, 0);

    /* last line has no newline; large values pass through */
    ASSERT_OK(kv_workload_next(wl, &req));
    ASSERT(req.timestamp_ms == UINT64_C(4294967296000));
    ASSERT_EQ(req.num_keys, 1);
    {
        kvp_key_t want = id_key(UINT64_C(9223372036854775807));
        ASSERT(key_eq(&req.keys[0], &want));
    }

    ASSERT_STATUS(kv_workload_next(wl, &req), KVP_ERR_NOT_FOUND);
    ASSERT_STATUS(kv_workload_next(wl, &req), KVP_ERR_NOT_FOUND);
    ASSERT_EQ(strcmp(kv_workload_error(wl), ""), 0);
    kv_workload_destroy(wl);

    /* an empty file ends at once */
    wl = open_trace(tmp_write_str(&tmp, ""));
    ASSERT_STATUS(kv_workload_next(wl, &req), KVP_ERR_NOT_FOUND);
    kv_workload_destroy(wl);
    tmp_cleanup(&tmp);
}

static void test_trace_bad_lines(void)
{
    static const char good[] =
        "{\"timestamp\": 1, \"input_length\": 600, \"output_length\": 2, \"hash_ids\": [0, 1]}\n";
    static const char *const bad[] = {
        "not json",
        "{\"timestamp\": 1, \"input_length\": 600,",
        "{\"timestamp\": 1, \"input_length\": 1, \"output_length\": 2, \"hash_ids\": [0]} trailing",
        "[1, 2]",
        "",
        "   ",
        "{\"input_length\": 1, \"output_length\": 2, \"hash_ids\": [0]}",
        "{\"timestamp\": 1, \"output_length\": 2, \"hash_ids\": [0]}",
        "{\"timestamp\": 1, \"input_length\": 1, \"hash_ids\": [0]}",
        "{\"timestamp\": 1, \"input_length\": 1, \"output_length\": 2}",
        "{\"timestamp\": \"1\", \"input_length\": 1, \"output_length\": 2, \"hash_ids\": [0]}",
        "{\"timestamp\": 1.5, \"input_length\": 1, \"output_length\": 2, \"hash_ids\": [0]}",
        "{\"timestamp\": 1, \"input_length\": null, \"output_length\": 2, \"hash_ids\": [0]}",
        "{\"timestamp\": 1, \"input_length\": 1, \"output_length\": true, \"hash_ids\": [0]}",
        "{\"timestamp\": 1, \"input_length\": 1, \"output_length\": 2, \"hash_ids\": {\"0\": 0}}",
        "{\"timestamp\": 1, \"input_length\": 1, \"output_length\": 2, \"hash_ids\": [\"0\"]}",
        "{\"timestamp\": 1, \"input_length\": 1, \"output_length\": 2, \"hash_ids\": [0.0]}",
        "{\"timestamp\": -1, \"input_length\": 1, \"output_length\": 2, \"hash_ids\": [0]}",
        "{\"timestamp\": 1, \"input_length\": -1, \"output_length\": 2, \"hash_ids\": []}",
        "{\"timestamp\": 1, \"input_length\": 1, \"output_length\": -2, \"hash_ids\": [0]}",
        "{\"timestamp\": 1, \"input_length\": 1, \"output_length\": 2, \"hash_ids\": [-5]}",
        "{\"timestamp\": 1, \"input_length\": 4294967296, \"output_length\": 2, \"hash_ids\": [0]}",
        "{\"timestamp\": 99999999999999999999, \"input_length\": 1, \"output_length\": 2, \"hash_ids\": [0]}",
        "{\"timestamp\": 1, \"input_length\": 1025, \"output_length\": 2, \"hash_ids\": [0, 1]}",
        "{\"timestamp\": 1, \"input_length\": 512, \"output_length\": 2, \"hash_ids\": [0, 1]}",
        "{\"timestamp\": 1, \"input_length\": 1, \"output_length\": 2, \"hash_ids\": []}",
        "{\"timestamp\": 1, \"timestamp\": 2, \"input_length\": 1, \"output_length\": 2, \"hash_ids\": [0]}",
        NULL, /* too many hash_ids: built below */
    };
    const size_t n_bad = sizeof(bad) / sizeof(bad[0]);
    tmp_t        tmp;

    tmp_init(&tmp);
    for (size_t k = 0; k < n_bad; k++) {
        char          *text;
        size_t         cap = 4 << 20, len;
        const char    *path;
        kv_workload_t *wl;
        kv_request_t   req, untouched;

        text = malloc(cap);
        ASSERT(text != NULL);
        /* two good lines, the bad one on line 3, then a good one */
        len = (size_t)snprintf(text, cap, "%s%s", good, good);
        if (bad[k] != NULL) {
            len += (size_t)snprintf(text + len, cap - len, "%s\n", bad[k]);
        } else {
            size_t ids = KV_WORKLOAD_TRACE_KEYS_MAX + 1;
            len += (size_t)snprintf(text + len, cap - len,
                                    "{\"timestamp\": 1, \"input_length\": %zu, "
                                    "\"output_length\": 2, \"hash_ids\": [",
                                    ids * 512);
            for (size_t i = 0; i < ids; i++) {
                len += (size_t)snprintf(text + len, cap - len, "%s%zu",
                                        i ? "," : "", i);
            }
            len += (size_t)snprintf(text + len, cap - len, "]}\n");
        }
        len += (size_t)snprintf(text + len, cap - len, "%s", good);
        ASSERT(len < cap);

        path = tmp_write(&tmp, text, len);
        wl   = open_trace(path);
        ASSERT_OK(kv_workload_next(wl, &req));
        ASSERT_OK(kv_workload_next(wl, &req));
        memset(&untouched, 0xa5, sizeof(untouched));
        req = untouched;
        ASSERT_STATUS(kv_workload_next(wl, &req), KVP_ERR_INVALID_PARAM);
        ASSERT(memcmp(&req, &untouched, sizeof(req)) == 0);
        {
            const char *msg = kv_workload_error(wl);
            char        where[160];

            snprintf(where, sizeof(where), "%s:3:", path);
            if (strstr(msg, where) == NULL) {
                fprintf(stderr, "case %zu: message \"%s\" lacks \"%s\"\n", k,
                        msg, where);
                abort();
            }
        }
        /* a bad line ends the trace */
        ASSERT_STATUS(kv_workload_next(wl, &req), KVP_ERR_INVALID_PARAM);
        ASSERT(strstr(kv_workload_error(wl), ":3:") != NULL);
        kv_workload_destroy(wl);
        free(text);
        unlink(path);
    }
    tmp_cleanup(&tmp);
}

static void test_trace_long_line(void)
{
    static const char good[] =
        "{\"timestamp\": 1, \"input_length\": 600, \"output_length\": 2, \"hash_ids\": [0, 1]}\n";
    size_t         size = (size_t)2 << 20;
    char          *text = malloc(sizeof(good) + size + 2);
    tmp_t          tmp;
    kv_workload_t *wl;
    kv_request_t   req;
    size_t         len;

    ASSERT(text != NULL);
    tmp_init(&tmp);
    /* a 2 MiB line of valid JSON (padded with spaces) on line 2 */
    len = (size_t)snprintf(text, sizeof(good), "%s", good);
    memset(text + len, ' ', size);
    memcpy(text + len, good, sizeof(good) - 2); /* without its newline */
    len += size;
    text[len++] = '\n';
    wl = open_trace(tmp_write(&tmp, text, len));
    ASSERT_OK(kv_workload_next(wl, &req));
    ASSERT_STATUS(kv_workload_next(wl, &req), KVP_ERR_INVALID_PARAM);
    ASSERT(strstr(kv_workload_error(wl), ":2:") != NULL);
    ASSERT(strstr(kv_workload_error(wl), "longer") != NULL);
    kv_workload_destroy(wl);

    /* the same line at exactly the limit is accepted */
    len = (size_t)snprintf(text, sizeof(good), "%s", good);
    memset(text + len, ' ', KV_WORKLOAD_TRACE_LINE_MAX);
    memcpy(text + len, good, sizeof(good) - 2);
    len += KV_WORKLOAD_TRACE_LINE_MAX;
    text[len++] = '\n';
    wl = open_trace(tmp_write(&tmp, text, len));
    ASSERT_OK(kv_workload_next(wl, &req));
    ASSERT_OK(kv_workload_next(wl, &req));
    ASSERT_EQ(req.num_keys, 2);
    ASSERT_STATUS(kv_workload_next(wl, &req), KVP_ERR_NOT_FOUND);
    kv_workload_destroy(wl);

    free(text);
    tmp_cleanup(&tmp);
}

static void test_trace_open_errors(void)
{
    kv_workload_t *wl = (kv_workload_t *)&wl; /* sentinel */
    char           err[256];
    const char    *missing = "/nonexistent/kvp_workload/trace.jsonl";

    ASSERT_STATUS(kv_workload_trace_open(missing, &wl, err, sizeof(err)),
                  KVP_ERR_IO);
    ASSERT(wl == (kv_workload_t *)&wl);
    ASSERT(strstr(err, missing) != NULL);
    ASSERT(strstr(err, strerror(ENOENT)) != NULL);

    /* NULL or tiny message buffers are fine */
    ASSERT_STATUS(kv_workload_trace_open(missing, &wl, NULL, 0), KVP_ERR_IO);
    ASSERT_STATUS(kv_workload_trace_open(missing, &wl, err, 4), KVP_ERR_IO);
    ASSERT_EQ(strlen(err), 3);

    ASSERT_STATUS(kv_workload_trace_open(NULL, &wl, err, sizeof(err)),
                  KVP_ERR_INVALID_PARAM);
    ASSERT_STATUS(kv_workload_trace_open(missing, NULL, err, sizeof(err)),
                  KVP_ERR_INVALID_PARAM);
    ASSERT(wl == (kv_workload_t *)&wl);
}

/* The real Mooncake conversation trace, named by $KVP_TRACE. */
static void test_trace_real(void)
{
    const char    *path = getenv("KVP_TRACE");
    char           err[512];
    kv_workload_t *wl = NULL;
    kv_request_t   req;
    kvp_status_t   status;
    uint64_t       count = 0, in_sum = 0, out_sum = 0, keys = 0, prev = 0;

    if (path == NULL || access(path, R_OK) != 0) {
        KV_SKIP("$KVP_TRACE does not name a readable Mooncake conversation trace");
    }
    status = kv_workload_trace_open(path, &wl, err, sizeof(err));
    if (status != KVP_OK) {
        fprintf(stderr, "%s\n", err);
    }
    ASSERT_OK(status);
    while ((status = kv_workload_next(wl, &req)) == KVP_OK) {
        ASSERT_LE(prev, req.timestamp_ms); /* the trace is sorted */
        prev = req.timestamp_ms;
        ASSERT_EQ(req.num_keys, (req.input_tokens + 511) / 512);
        count++;
        in_sum += req.input_tokens;
        out_sum += req.output_tokens;
        keys += req.num_keys;
    }
    if (status != KVP_ERR_NOT_FOUND) {
        fprintf(stderr, "%s\n", kv_workload_error(wl));
    }
    ASSERT_STATUS(status, KVP_ERR_NOT_FOUND);
    ASSERT_EQ(strcmp(kv_workload_error(wl), ""), 0);
    ASSERT_EQ(count, 12031);
    /* SOURCE.md: average input 12,035 and output 343 tokens */
    ASSERT_EQ(in_sum, 144793823);
    ASSERT_EQ(out_sum, 4122048);
    ASSERT_LE(count, keys);
    kv_workload_destroy(wl);
}

KV_TEST_MAIN(KV_TEST(test_generator_determinism), KV_TEST(test_generator_shape),
             KV_TEST(test_generator_params), KV_TEST(test_generator_turns_extend),
             KV_TEST(test_generator_prefix_sharing), KV_TEST(test_trace_good),
             KV_TEST(test_trace_bad_lines), KV_TEST(test_trace_long_line),
             KV_TEST(test_trace_open_errors), KV_TEST(test_trace_real))
