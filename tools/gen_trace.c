/*
 * kvpool gen-trace: write a synthetic trace in the Mooncake format, from the
 * built-in chat generator (workload.h), so that the tools that read traces
 * (replay, simulate) can be checked on more than one.
 *
 *   kvpool gen-trace [--requests N] [--seed S] [--conversations C]
 *                    [--system-prompts P] > TRACE
 *
 * hash_ids number the generator's block keys in order of first appearance
 * (equal prefixes, equal ids); a prompt that does not fill its last block
 * gets one more id, never used again, as in Mooncake's traces.
 */
#include "cli.h"
#include "workload.h"

#include <kv/alloc.h>
#include <kv/hash.h>

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GEN_TRACE_BLOCK_TOKENS 512
#define GEN_TRACE_REQUESTS_MAX 10000000ull

/* Key -> id, open addressing. */
typedef struct id_table {
    kvp_key_t *keys;
    uint64_t  *ids; /* id + 1; 0 = empty slot */
    size_t     cap; /* a power of two */
    size_t     len;
} id_table_t;

static size_t slot_of(const id_table_t *t, const kvp_key_t *key)
{
    size_t i = (size_t)kv_key_hash64(key) & (t->cap - 1);

    while (t->ids[i] != 0 && memcmp(t->keys[i].bytes, key->bytes, KVP_KEY_LEN) != 0) {
        i = (i + 1) & (t->cap - 1);
    }
    return i;
}

static void table_grow(id_table_t *t)
{
    id_table_t old = *t;

    t->cap  = old.cap ? 2 * old.cap : 1 << 16;
    t->keys = kv_calloc(t->cap, sizeof(*t->keys), "trace keys");
    t->ids  = kv_calloc(t->cap, sizeof(*t->ids), "trace ids");
    for (size_t i = 0; i < old.cap; i++) {
        if (old.ids[i] != 0) {
            size_t s   = slot_of(t, &old.keys[i]);
            t->keys[s] = old.keys[i];
            t->ids[s]  = old.ids[i];
        }
    }
    kv_free(old.keys);
    kv_free(old.ids);
}

/* The id of @p key; @p next_id_p numbers new keys. */
static uint64_t table_id(id_table_t *t, const kvp_key_t *key, uint64_t *next_id_p)
{
    size_t s;

    if (2 * (t->len + 1) > t->cap) {
        table_grow(t);
    }
    s = slot_of(t, key);
    if (t->ids[s] == 0) {
        t->keys[s] = *key;
        t->ids[s]  = ++*next_id_p; /* stored as id + 1 */
        t->len++;
    }
    return t->ids[s] - 1;
}

int kv_cli_gen_trace(int argc, char **argv)
{
    static const struct option options[] = {
        {"requests", required_argument, NULL, 'r'},
        {"seed", required_argument, NULL, 's'},
        {"conversations", required_argument, NULL, 'c'},
        {"system-prompts", required_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    kv_workload_params_t params = {0};
    kv_workload_t       *workload;
    kv_request_t         req;
    id_table_t           table    = {0};
    uint64_t             requests = 10000, next_id = 0, v;
    int                  opt, rc                   = 0;

    params.block_tokens = GEN_TRACE_BLOCK_TOKENS;
    optind              = 1;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case 'r':
            if (!kv_cli_parse_u64("gen-trace", "--requests", optarg, 0,
                                  GEN_TRACE_REQUESTS_MAX, &requests)) {
                return 2;
            }
            break;
        case 's':
            if (!kv_cli_parse_u64("gen-trace", "--seed", optarg, 0, UINT64_MAX,
                                  &params.seed)) {
                return 2;
            }
            break;
        case 'c':
            if (!kv_cli_parse_u64("gen-trace", "--conversations", optarg, 0,
                                  KV_WORKLOAD_GEN_MAX_CONVERSATIONS, &v)) {
                return 2;
            }
            params.conversations = (uint32_t)v;
            break;
        case 'p':
            if (!kv_cli_parse_u64("gen-trace", "--system-prompts", optarg, 0,
                                  KV_WORKLOAD_GEN_MAX_SYSTEM_PROMPTS, &v)) {
                return 2;
            }
            params.system_prompts = (uint32_t)v;
            break;
        case 'h':
            printf(
                "usage: kvpool gen-trace [--requests N] [--seed S] [--conversations C]\n"
                "                        [--system-prompts P] > TRACE\n");
            return 0;
        default:
            fprintf(stderr, "usage: kvpool gen-trace [--requests N] [--seed S] "
                            "[--conversations C] [--system-prompts P]\n");
            return 2;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "kvpool gen-trace: no arguments besides the options\n");
        return 2;
    }
    if (kv_workload_generator_create(&params, &workload) != KVP_OK) {
        fprintf(stderr, "kvpool gen-trace: cannot start the generator\n");
        return 1;
    }
    for (uint64_t n = 0; n < requests && rc == 0; n++) {
        if (kv_workload_next(workload, &req) != KVP_OK) {
            fprintf(stderr, "kvpool gen-trace: %s\n", kv_workload_error(workload));
            rc = 1;
            break;
        }
        printf("{\"timestamp\": %llu, \"input_length\": %u, \"output_length\": %u, "
               "\"hash_ids\": [",
               (unsigned long long)req.timestamp_ms, req.input_tokens, req.output_tokens);
        for (size_t i = 0; i < req.num_keys; i++) {
            printf("%s%llu", i > 0 ? ", " : "",
                   (unsigned long long)table_id(&table, &req.keys[i], &next_id));
        }
        if ((uint64_t)req.input_tokens >
            (uint64_t)req.num_keys * GEN_TRACE_BLOCK_TOKENS) {
            printf("%s%llu", req.num_keys > 0 ? ", " : "", (unsigned long long)next_id++);
        }
        printf("]}\n");
        if (ferror(stdout)) {
            fprintf(stderr, "kvpool gen-trace: writing: %s\n", strerror(errno));
            rc = 1;
        }
    }
    kv_free(table.keys);
    kv_free(table.ids);
    kv_workload_destroy(workload);
    return rc;
}
