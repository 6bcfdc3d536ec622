/**
 * @file workload.c
 * @brief Request sources for `kvpool demo`: the built-in chat generator and
 * the Mooncake trace reader.  See workload.h.
 */
#include "workload.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#define WL_ERR_LEN 512

/* generator figures */
#define GEN_DEFAULT_BLOCK_TOKENS   256
#define GEN_DEFAULT_CONVERSATIONS  64
#define GEN_DEFAULT_SYSTEM_PROMPTS 8
#define GEN_SYSTEM_BLOCKS_MAX      8     /* system prompts are 1..8 blocks */
#define GEN_TURNS_MAX              10    /* conversations last 1..10 turns */
#define GEN_USER_MIN               50
#define GEN_USER_MAX               2000
#define GEN_ANSWER_MIN             20
#define GEN_ANSWER_MAX             800
#define GEN_MEAN_GAP_US            50000.0 /* mean inter-arrival, 50 ms */
#define GEN_VOCAB                  128256u /* token ids 0..VOCAB-1 */
#define GEN_ZIPF_SCALE             ((uint64_t)1 << 32)

/* message kinds, mixed into a message's token seed */
enum {
    MSG_SYSTEM = 0,
    MSG_USER   = 1,
    MSG_ANSWER = 2
};

typedef enum {
    WL_GENERATOR,
    WL_TRACE
} wl_kind_t;

/* xoshiro256** */
typedef struct {
    uint64_t s[4];
} wl_rng_t;

typedef struct {
    uint32_t *tokens;
    size_t    len;
} gen_sysprompt_t;

typedef struct {
    uint64_t   id;             /* serial number, seeds its messages */
    uint32_t   turn;           /* turns issued so far */
    uint32_t   max_turns;
    uint32_t   pending_answer; /* answer of the last turn, not yet appended */
    uint32_t  *tokens;         /* the conversation so far */
    size_t     num_tokens;
    size_t     cap_tokens;
    kvp_key_t *keys;           /* keys of tokens[0 .. num_keys * block) */
    size_t     num_keys;
    size_t     cap_keys;
} gen_conv_t;

typedef struct {
    wl_rng_t         rng;
    uint64_t         seed;
    uint32_t         block_tokens;
    uint32_t         num_convs;
    uint32_t         num_sys;
    gen_sysprompt_t *sys;
    uint64_t        *sys_cdf;   /* cumulative Zipf weights */
    gen_conv_t      *convs;
    uint64_t         next_conv_id;
    uint64_t         clock_us;
} wl_gen_t;

typedef struct {
    FILE      *fp;
    char      *path;
    uint64_t   line_no;
    char      *line;       /* current line, NUL-terminated */
    size_t     line_cap;
    kvp_key_t *keys;
    size_t     cap_keys;
    kvp_status_t done;     /* KVP_OK while more may come; else sticky */
} wl_trace_t;

struct kv_workload {
    wl_kind_t kind;
    char      err[WL_ERR_LEN];
    union {
        wl_gen_t   gen;
        wl_trace_t trace;
    } u;
};

/* ---------------------------------------------------------------- helpers */

static void wl_vformat(char *buf, size_t len, const char *fmt, va_list ap)
{
    if (buf != NULL && len > 0) {
        vsnprintf(buf, len, fmt, ap);
    }
}

static void wl_format(char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void wl_format(char *buf, size_t len, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    wl_vformat(buf, len, fmt, ap);
    va_end(ap);
}

static kvp_status_t wl_fail(kv_workload_t *wl, kvp_status_t status,
                            const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static kvp_status_t wl_fail(kv_workload_t *wl, kvp_status_t status,
                            const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    wl_vformat(wl->err, sizeof(wl->err), fmt, ap);
    va_end(ap);
    return status;
}

/*
 * Grow *buf_p to hold at least @p need elements of @p elem bytes, doubling
 * up to @p max.  Leaves *buf_p alone on failure.
 */
static kvp_status_t wl_reserve(void **buf_p, size_t *cap_p, size_t need,
                               size_t max, size_t elem)
{
    size_t cap = *cap_p ? *cap_p : 64;
    void  *buf;

    if (need <= *cap_p) {
        return KVP_OK;
    }
    while (cap < need) {
        cap *= 2;
    }
    if (cap > max) {
        cap = max;
    }
    if (cap < need) {
        return KVP_ERR_INTERNAL;
    }
    buf = realloc(*buf_p, cap * elem);
    if (buf == NULL) {
        return KVP_ERR_NO_MEMORY;
    }
    *buf_p = buf;
    *cap_p = cap;
    return KVP_OK;
}

/* ------------------------------------------------------------- randomness */

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));

    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

static uint64_t rotl64(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static void rng_seed(wl_rng_t *rng, uint64_t seed)
{
    uint64_t sm = seed;

    for (int i = 0; i < 4; i++) {
        rng->s[i] = splitmix64(&sm);
    }
}

static uint64_t rng_next(wl_rng_t *rng)
{
    uint64_t *s      = rng->s;
    uint64_t  result = rotl64(s[1] * 5, 7) * 9;
    uint64_t  t      = s[1] << 17;

    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl64(s[3], 45);
    return result;
}

/* A uniform value in [0, n), n < 2^32. */
static uint32_t rng_below(wl_rng_t *rng, uint32_t n)
{
    return (uint32_t)(((rng_next(rng) >> 32) * (uint64_t)n) >> 32);
}

/* A uniform value in [0, 1). */
static double rng_unit(wl_rng_t *rng)
{
    return (double)(rng_next(rng) >> 11) * 0x1p-53;
}

/*
 * A length in [lo, hi], skewed towards short ones (u^2), as chat messages
 * are: the median is about a quarter of the way up.
 */
static uint32_t rng_length(wl_rng_t *rng, uint32_t lo, uint32_t hi)
{
    double u = rng_unit(rng);

    return lo + (uint32_t)((double)(hi - lo + 1) * u * u);
}

/*
 * Natural logarithm of x > 0, without libm (keeps the generator free of a
 * -lm dependency and bit-for-bit reproducible across libm versions).
 */
static double wl_log(double x)
{
    static const double ln2 = 0.69314718055994530942;
    int                 e   = 0;
    double              z, z2, term, sum = 0.0;

    while (x >= 2.0) {
        x *= 0.5;
        e++;
    }
    while (x < 1.0) {
        x *= 2.0;
        e--;
    }
    /* x in [1, 2): ln x = 2 atanh(z), z = (x-1)/(x+1) in [0, 1/3) */
    z    = (x - 1.0) / (x + 1.0);
    z2   = z * z;
    term = z;
    for (int k = 1; k < 50; k += 2) {
        sum += term / k;
        term *= z2;
    }
    return 2.0 * sum + e * ln2;
}

/* The seed of one message's tokens. */
static uint64_t message_seed(uint64_t seed, uint64_t conv, uint64_t turn,
                             int kind)
{
    uint64_t s = seed;
    uint64_t h = splitmix64(&s);

    s = h ^ conv;
    h = splitmix64(&s);
    s = h ^ (turn << 2) ^ (uint64_t)kind;
    return splitmix64(&s);
}

static void fill_tokens(uint32_t *tokens, size_t n, uint64_t seed)
{
    uint64_t s = seed;

    for (size_t i = 0; i < n; i++) {
        tokens[i] = (uint32_t)(((splitmix64(&s) >> 32) * GEN_VOCAB) >> 32);
    }
}

/* -------------------------------------------------------------- generator */

static size_t gen_max_keys(const wl_gen_t *gen)
{
    return KV_WORKLOAD_GEN_MAX_TOKENS / gen->block_tokens;
}

static uint32_t gen_pick_sysprompt(wl_gen_t *gen)
{
    uint64_t total = gen->sys_cdf[gen->num_sys - 1];
    uint64_t u     = rng_next(&gen->rng) % total;
    uint32_t lo = 0, hi = gen->num_sys - 1;

    /* first index whose cumulative weight exceeds u */
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (gen->sys_cdf[mid] > u) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    return lo;
}

/* Append the @p n tokens of message (@p turn, @p kind) to @p conv. */
static kvp_status_t gen_append(wl_gen_t *gen, gen_conv_t *conv, size_t n,
                               uint32_t turn, int kind)
{
    kvp_status_t status;

    status = wl_reserve((void **)&conv->tokens, &conv->cap_tokens,
                        conv->num_tokens + n, KV_WORKLOAD_GEN_MAX_TOKENS,
                        sizeof(*conv->tokens));
    if (status != KVP_OK) {
        return status;
    }
    fill_tokens(conv->tokens + conv->num_tokens, n,
                message_seed(gen->seed, conv->id, turn, kind));
    conv->num_tokens += n;
    return KVP_OK;
}

/* (Re)start @p conv as a new conversation: a system prompt, no turns yet. */
static kvp_status_t gen_conv_start(wl_gen_t *gen, gen_conv_t *conv)
{
    const gen_sysprompt_t *sys = &gen->sys[gen_pick_sysprompt(gen)];
    uint32_t               max_turns = 1 + rng_below(&gen->rng, GEN_TURNS_MAX);
    kvp_status_t           status;

    /* on failure the conversation is left as it was (ended or not) */
    status = wl_reserve((void **)&conv->tokens, &conv->cap_tokens, sys->len,
                        KV_WORKLOAD_GEN_MAX_TOKENS, sizeof(*conv->tokens));
    if (status != KVP_OK) {
        return status;
    }
    memcpy(conv->tokens, sys->tokens, sys->len * sizeof(*sys->tokens));
    conv->id             = gen->next_conv_id++;
    conv->turn           = 0;
    conv->max_turns      = max_turns;
    conv->pending_answer = 0;
    conv->num_tokens     = sys->len;
    conv->num_keys       = 0;
    return KVP_OK;
}

/* Key the full blocks of @p conv not keyed yet. */
static kvp_status_t gen_conv_key(wl_gen_t *gen, gen_conv_t *conv)
{
    size_t       bt   = gen->block_tokens;
    size_t       need = conv->num_tokens / bt;
    size_t       done = conv->num_keys;
    kvp_status_t status;

    if (need <= done) {
        return KVP_OK;
    }
    status = wl_reserve((void **)&conv->keys, &conv->cap_keys, need,
                        gen_max_keys(gen), sizeof(*conv->keys));
    if (status != KVP_OK) {
        return status;
    }
    /* chaining from the last key equals keying the whole sequence again */
    conv->num_keys = done + kvp_chain_keys(conv->tokens + done * bt,
                                           conv->num_tokens - done * bt, bt,
                                           done ? &conv->keys[done - 1] : NULL,
                                           conv->keys + done);
    return KVP_OK;
}

static void gen_destroy(wl_gen_t *gen)
{
    if (gen->sys != NULL) {
        for (uint32_t i = 0; i < gen->num_sys; i++) {
            free(gen->sys[i].tokens);
        }
    }
    if (gen->convs != NULL) {
        for (uint32_t i = 0; i < gen->num_convs; i++) {
            free(gen->convs[i].tokens);
            free(gen->convs[i].keys);
        }
    }
    free(gen->sys);
    free(gen->sys_cdf);
    free(gen->convs);
}

static kvp_status_t gen_init(wl_gen_t *gen, const kv_workload_params_t *params)
{
    kvp_status_t status;
    uint64_t     total = 0;

    gen->seed         = params->seed;
    gen->block_tokens = params->block_tokens ? params->block_tokens
                                             : GEN_DEFAULT_BLOCK_TOKENS;
    gen->num_convs    = params->conversations ? params->conversations
                                              : GEN_DEFAULT_CONVERSATIONS;
    gen->num_sys      = params->system_prompts ? params->system_prompts
                                               : GEN_DEFAULT_SYSTEM_PROMPTS;
    rng_seed(&gen->rng, params->seed);

    gen->sys     = calloc(gen->num_sys, sizeof(*gen->sys));
    gen->sys_cdf = calloc(gen->num_sys, sizeof(*gen->sys_cdf));
    gen->convs   = calloc(gen->num_convs, sizeof(*gen->convs));
    if (gen->sys == NULL || gen->sys_cdf == NULL || gen->convs == NULL) {
        return KVP_ERR_NO_MEMORY;
    }
    for (uint32_t i = 0; i < gen->num_sys; i++) {
        gen_sysprompt_t *sys = &gen->sys[i];

        sys->len = (size_t)(1 + rng_below(&gen->rng, GEN_SYSTEM_BLOCKS_MAX)) *
                   gen->block_tokens;
        sys->tokens = malloc(sys->len * sizeof(*sys->tokens));
        if (sys->tokens == NULL) {
            return KVP_ERR_NO_MEMORY;
        }
        fill_tokens(sys->tokens, sys->len,
                    message_seed(gen->seed, UINT64_MAX - i, 0, MSG_SYSTEM));
        total += GEN_ZIPF_SCALE / (i + 1);
        gen->sys_cdf[i] = total;
    }
    for (uint32_t i = 0; i < gen->num_convs; i++) {
        status = gen_conv_start(gen, &gen->convs[i]);
        if (status != KVP_OK) {
            return status;
        }
    }
    return KVP_OK;
}

static kvp_status_t gen_next(kv_workload_t *wl, kv_request_t *req)
{
    wl_gen_t    *gen  = &wl->u.gen;
    gen_conv_t  *conv = &gen->convs[rng_below(&gen->rng, gen->num_convs)];
    uint32_t     user = rng_length(&gen->rng, GEN_USER_MIN, GEN_USER_MAX);
    uint32_t     answer;
    kvp_status_t status;

    if (conv->turn >= conv->max_turns ||
        conv->num_tokens + conv->pending_answer + user >
            KV_WORKLOAD_GEN_MAX_TOKENS) {
        status = gen_conv_start(gen, conv);
        if (status != KVP_OK) {
            goto cleanup;
        }
    }
    if (conv->pending_answer > 0) {
        /* the previous turn's answer, seeded by that turn's number */
        status = gen_append(gen, conv, conv->pending_answer, conv->turn - 1,
                            MSG_ANSWER);
        if (status != KVP_OK) {
            goto cleanup;
        }
        conv->pending_answer = 0;
    }
    status = gen_append(gen, conv, user, conv->turn, MSG_USER);
    if (status != KVP_OK) {
        goto cleanup;
    }
    status = gen_conv_key(gen, conv);
    if (status != KVP_OK) {
        goto cleanup;
    }
    answer = rng_length(&gen->rng, GEN_ANSWER_MIN, GEN_ANSWER_MAX);
    conv->pending_answer = answer;
    conv->turn++;
    gen->clock_us += (uint64_t)(-wl_log(1.0 - rng_unit(&gen->rng)) *
                                    GEN_MEAN_GAP_US + 0.5);

    req->timestamp_ms  = gen->clock_us / 1000;
    req->input_tokens  = (uint32_t)conv->num_tokens;
    req->output_tokens = answer;
    req->num_keys      = conv->num_keys;
    req->keys          = conv->keys;
    status = KVP_OK;

cleanup:
    if (status == KVP_ERR_NO_MEMORY) {
        wl_fail(wl, status, "generator: out of memory");
    } else if (status != KVP_OK) {
        wl_fail(wl, status, "generator: internal error (%d)", (int)status);
    }
    return status;
}

kvp_status_t kv_workload_generator_create(const kv_workload_params_t *params,
                                          kv_workload_t **workload_p)
{
    static const kv_workload_params_t defaults;
    kv_workload_t *wl = NULL;
    kvp_status_t   status;

    if (workload_p == NULL) {
        return KVP_ERR_INVALID_PARAM;
    }
    if (params == NULL) {
        params = &defaults;
    }
    if (params->block_tokens > KV_WORKLOAD_GEN_MAX_BLOCK_TOKENS ||
        params->conversations > KV_WORKLOAD_GEN_MAX_CONVERSATIONS ||
        params->system_prompts > KV_WORKLOAD_GEN_MAX_SYSTEM_PROMPTS) {
        return KVP_ERR_INVALID_PARAM;
    }
    wl = calloc(1, sizeof(*wl));
    if (wl == NULL) {
        status = KVP_ERR_NO_MEMORY;
        goto cleanup;
    }
    wl->kind = WL_GENERATOR;
    status   = gen_init(&wl->u.gen, params);
    if (status != KVP_OK) {
        goto cleanup;
    }
    *workload_p = wl;
    wl          = NULL;

cleanup:
    kv_workload_destroy(wl);
    return status;
}

/* ------------------------------------------------------------ trace reader */

/*
 * Read the next line into tr->line (newline stripped).
 * @return KVP_OK; KVP_ERR_NOT_FOUND at end of file; KVP_ERR_TOO_LARGE for a
 *         line over the limit; KVP_ERR_IO; KVP_ERR_NO_MEMORY.
 */
static kvp_status_t trace_read_line(wl_trace_t *tr, size_t *len_p)
{
    size_t       len = 0;
    int          c;
    kvp_status_t status;

    flockfile(tr->fp);
    for (;;) {
        c = getc_unlocked(tr->fp);
        if (c == EOF) {
            if (ferror(tr->fp)) {
                status = KVP_ERR_IO;
                goto cleanup;
            }
            if (len == 0) {
                status = KVP_ERR_NOT_FOUND;
                goto cleanup;
            }
            break; /* a last line without a newline */
        }
        if (c == '\n') {
            break;
        }
        if (len >= KV_WORKLOAD_TRACE_LINE_MAX) {
            status = KVP_ERR_TOO_LARGE;
            goto cleanup;
        }
        if (len + 1 >= tr->line_cap) {
            status = wl_reserve((void **)&tr->line, &tr->line_cap, len + 2,
                                KV_WORKLOAD_TRACE_LINE_MAX + 1, 1);
            if (status != KVP_OK) {
                goto cleanup;
            }
        }
        tr->line[len++] = (char)c;
    }
    if (len > 0 && tr->line[len - 1] == '\r') {
        len--;
    }
    if (tr->line != NULL) {
        tr->line[len] = '\0';
    }
    *len_p = len;
    status = KVP_OK;

cleanup:
    funlockfile(tr->fp);
    return status;
}

/* A non-negative integer field of @p obj, at most @p max. */
static kvp_status_t trace_get_uint(kv_workload_t *wl, json_t *obj,
                                   const char *name, uint64_t max,
                                   uint64_t *value_p)
{
    wl_trace_t *tr = &wl->u.trace;
    json_t     *val = json_object_get(obj, name);
    json_int_t  v;

    if (val == NULL) {
        return wl_fail(wl, KVP_ERR_INVALID_PARAM,
                       "%s:%" PRIu64 ": missing field \"%s\"", tr->path,
                       tr->line_no, name);
    }
    if (!json_is_integer(val)) {
        return wl_fail(wl, KVP_ERR_INVALID_PARAM,
                       "%s:%" PRIu64 ": field \"%s\" is not an integer",
                       tr->path, tr->line_no, name);
    }
    v = json_integer_value(val);
    if (v < 0) {
        return wl_fail(wl, KVP_ERR_INVALID_PARAM,
                       "%s:%" PRIu64 ": field \"%s\" is negative (%" JSON_INTEGER_FORMAT ")",
                       tr->path, tr->line_no, name, v);
    }
    if ((uint64_t)v > max) {
        return wl_fail(wl, KVP_ERR_INVALID_PARAM,
                       "%s:%" PRIu64 ": field \"%s\" is too large (%" JSON_INTEGER_FORMAT ")",
                       tr->path, tr->line_no, name, v);
    }
    *value_p = (uint64_t)v;
    return KVP_OK;
}

/* Parse and check tr->line, filling @p req. */
static kvp_status_t trace_parse(kv_workload_t *wl, size_t len,
                                kv_request_t *req)
{
    wl_trace_t  *tr   = &wl->u.trace;
    json_t      *root = NULL;
    json_t      *ids;
    json_error_t jerr;
    uint64_t     timestamp, input, output;
    size_t       count, want;
    kvp_status_t status;

    if (len == 0) {
        status = wl_fail(wl, KVP_ERR_INVALID_PARAM,
                         "%s:%" PRIu64 ": empty line", tr->path, tr->line_no);
        goto cleanup;
    }
    root = json_loadb(tr->line, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        status = wl_fail(wl, KVP_ERR_INVALID_PARAM,
                         "%s:%" PRIu64 ": malformed JSON at column %d: %s",
                         tr->path, tr->line_no, jerr.column, jerr.text);
        goto cleanup;
    }
    if (!json_is_object(root)) {
        status = wl_fail(wl, KVP_ERR_INVALID_PARAM,
                         "%s:%" PRIu64 ": not a JSON object", tr->path,
                         tr->line_no);
        goto cleanup;
    }
    status = trace_get_uint(wl, root, "timestamp", UINT64_MAX, &timestamp);
    if (status != KVP_OK) {
        goto cleanup;
    }
    status = trace_get_uint(wl, root, "input_length", UINT32_MAX, &input);
    if (status != KVP_OK) {
        goto cleanup;
    }
    status = trace_get_uint(wl, root, "output_length", UINT32_MAX, &output);
    if (status != KVP_OK) {
        goto cleanup;
    }
    ids = json_object_get(root, "hash_ids");
    if (ids == NULL) {
        status = wl_fail(wl, KVP_ERR_INVALID_PARAM,
                         "%s:%" PRIu64 ": missing field \"hash_ids\"",
                         tr->path, tr->line_no);
        goto cleanup;
    }
    if (!json_is_array(ids)) {
        status = wl_fail(wl, KVP_ERR_INVALID_PARAM,
                         "%s:%" PRIu64 ": field \"hash_ids\" is not an array",
                         tr->path, tr->line_no);
        goto cleanup;
    }
    count = json_array_size(ids);
    if (count > KV_WORKLOAD_TRACE_KEYS_MAX) {
        status = wl_fail(wl, KVP_ERR_INVALID_PARAM,
                         "%s:%" PRIu64 ": %zu hash_ids, more than %d",
                         tr->path, tr->line_no, count,
                         KV_WORKLOAD_TRACE_KEYS_MAX);
        goto cleanup;
    }
    want = (size_t)((input + KV_WORKLOAD_TRACE_BLOCK_TOKENS - 1) /
                    KV_WORKLOAD_TRACE_BLOCK_TOKENS);
    if (count != want) {
        status = wl_fail(wl, KVP_ERR_INVALID_PARAM,
                         "%s:%" PRIu64 ": %zu hash_ids, but input_length %"
                         PRIu64 " needs ceil(%" PRIu64 "/%d) = %zu",
                         tr->path, tr->line_no, count, input, input,
                         KV_WORKLOAD_TRACE_BLOCK_TOKENS, want);
        goto cleanup;
    }
    status = wl_reserve((void **)&tr->keys, &tr->cap_keys, count,
                        KV_WORKLOAD_TRACE_KEYS_MAX, sizeof(*tr->keys));
    if (status != KVP_OK) {
        status = wl_fail(wl, status, "%s:%" PRIu64 ": out of memory",
                         tr->path, tr->line_no);
        goto cleanup;
    }
    for (size_t i = 0; i < count; i++) {
        json_t    *id = json_array_get(ids, i);
        json_int_t v;
        uint64_t   u;
        uint8_t    le[8];

        if (!json_is_integer(id)) {
            status = wl_fail(wl, KVP_ERR_INVALID_PARAM,
                             "%s:%" PRIu64 ": hash_ids[%zu] is not an integer",
                             tr->path, tr->line_no, i);
            goto cleanup;
        }
        v = json_integer_value(id);
        if (v < 0) {
            status = wl_fail(wl, KVP_ERR_INVALID_PARAM,
                             "%s:%" PRIu64 ": hash_ids[%zu] is negative (%"
                             JSON_INTEGER_FORMAT ")",
                             tr->path, tr->line_no, i, v);
            goto cleanup;
        }
        u = (uint64_t)v;
        for (int b = 0; b < 8; b++) {
            le[b] = (uint8_t)(u >> (8 * b));
        }
        tr->keys[i] = kvp_key_from_bytes(le, sizeof(le));
    }

    req->timestamp_ms  = timestamp;
    req->input_tokens  = (uint32_t)input;
    req->output_tokens = (uint32_t)output;
    req->num_keys      = count;
    req->keys          = count ? tr->keys : NULL;
    status             = KVP_OK;

cleanup:
    json_decref(root);
    return status;
}

static kvp_status_t trace_next(kv_workload_t *wl, kv_request_t *req)
{
    wl_trace_t  *tr  = &wl->u.trace;
    size_t       len = 0;
    kvp_status_t status;

    if (tr->done != KVP_OK) {
        return tr->done; /* the message of that error is still in wl->err */
    }
    tr->line_no++;
    status = trace_read_line(tr, &len);
    switch (status) {
    case KVP_OK:
        status = trace_parse(wl, len, req);
        break;
    case KVP_ERR_NOT_FOUND:
        tr->line_no--;
        wl->err[0] = '\0';
        break;
    case KVP_ERR_TOO_LARGE:
        status = wl_fail(wl, KVP_ERR_INVALID_PARAM,
                         "%s:%" PRIu64 ": line longer than %zu bytes",
                         tr->path, tr->line_no, KV_WORKLOAD_TRACE_LINE_MAX);
        break;
    case KVP_ERR_IO:
        status = wl_fail(wl, status, "%s:%" PRIu64 ": read failed: %s",
                         tr->path, tr->line_no, strerror(errno));
        break;
    default:
        status = wl_fail(wl, status, "%s:%" PRIu64 ": out of memory",
                         tr->path, tr->line_no);
        break;
    }
    if (status == KVP_ERR_NOT_FOUND || status == KVP_ERR_INVALID_PARAM) {
        tr->done = status;
    }
    return status;
}

kvp_status_t kv_workload_trace_open(const char *path,
                                    kv_workload_t **workload_p, char *err,
                                    size_t err_len)
{
    kv_workload_t *wl = NULL;
    kvp_status_t   status;

    if (err != NULL && err_len > 0) {
        err[0] = '\0';
    }
    if (path == NULL || workload_p == NULL) {
        wl_format(err, err_len, "kv_workload_trace_open: NULL argument");
        return KVP_ERR_INVALID_PARAM;
    }
    wl = calloc(1, sizeof(*wl));
    if (wl == NULL) {
        status = KVP_ERR_NO_MEMORY;
        wl_format(err, err_len, "%s: out of memory", path);
        goto cleanup;
    }
    wl->kind         = WL_TRACE;
    wl->u.trace.path = strdup(path);
    if (wl->u.trace.path == NULL) {
        status = KVP_ERR_NO_MEMORY;
        wl_format(err, err_len, "%s: out of memory", path);
        goto cleanup;
    }
    wl->u.trace.fp = fopen(path, "r");
    if (wl->u.trace.fp == NULL) {
        status = KVP_ERR_IO;
        wl_format(err, err_len, "%s: cannot open: %s", path, strerror(errno));
        goto cleanup;
    }
    *workload_p = wl;
    wl          = NULL;
    status      = KVP_OK;

cleanup:
    kv_workload_destroy(wl);
    return status;
}

/* ---------------------------------------------------------------- common */

kvp_status_t kv_workload_next(kv_workload_t *workload, kv_request_t *req)
{
    if (workload == NULL || req == NULL) {
        return KVP_ERR_INVALID_PARAM;
    }
    if (workload->kind == WL_GENERATOR) {
        workload->err[0] = '\0';
        return gen_next(workload, req);
    }
    return trace_next(workload, req);
}

void kv_workload_block_bytes(const kvp_key_t *key, void *buf, uint64_t size)
{
    uint8_t *out = buf;
    uint64_t state;

    memcpy(&state, key->bytes, sizeof(state));
    for (uint64_t off = 0; off < size; off += 8) {
        uint64_t z = splitmix64(&state);
        memcpy(out + off, &z, size - off < 8 ? (size_t)(size - off) : 8);
    }
}

const char *kv_workload_error(const kv_workload_t *workload)
{
    return workload != NULL ? workload->err : "";
}

void kv_workload_destroy(kv_workload_t *workload)
{
    if (workload == NULL) {
        return;
    }
    if (workload->kind == WL_GENERATOR) {
        gen_destroy(&workload->u.gen);
    } else {
        if (workload->u.trace.fp != NULL) {
            fclose(workload->u.trace.fp);
        }
        free(workload->u.trace.path);
        free(workload->u.trace.line);
        free(workload->u.trace.keys);
    }
    free(workload);
}
