/**
 * @file workload.h
 * @brief Request sources for `kvpool demo`: a built-in multi-turn chat
 * generator and a reader of Mooncake-format JSONL traces.
 *
 * Both produce kv_request_t records: an arrival time, prompt and answer
 * lengths and the chain of block keys of the prompt.  The module uses only
 * the public client API (kvp_chain_keys, kvp_key_from_bytes), libc and
 * jansson.  It never prints: errors come back as a status plus a message
 * (kv_workload_error(), or the @c err buffer of kv_workload_trace_open()).
 *
 * Threading: a kv_workload_t is not thread-safe; use one from one thread at
 * a time.  Different workloads are independent.
 */
#ifndef KV_WORKLOAD_H
#define KV_WORKLOAD_H

#include <kvpool/kvpool.h>

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Tokens per block of a Mooncake trace's hash_ids. */
#define KV_WORKLOAD_TRACE_BLOCK_TOKENS 512

/** Longest trace line accepted, in bytes (newline excluded). */
#define KV_WORKLOAD_TRACE_LINE_MAX ((size_t)1 << 20)

/** Most hash_ids accepted on one trace line. */
#define KV_WORKLOAD_TRACE_KEYS_MAX 65536

/** Longest conversation of the generator, in tokens (prompt of any turn). */
#define KV_WORKLOAD_GEN_MAX_TOKENS 65536

/** Largest kv_workload_params_t::block_tokens accepted. */
#define KV_WORKLOAD_GEN_MAX_BLOCK_TOKENS 4096

/** Largest kv_workload_params_t::conversations accepted. */
#define KV_WORKLOAD_GEN_MAX_CONVERSATIONS 4096

/** Largest kv_workload_params_t::system_prompts accepted. */
#define KV_WORKLOAD_GEN_MAX_SYSTEM_PROMPTS 1024

/** Opaque request source. */
typedef struct kv_workload kv_workload_t;

/** One request of a workload. */
typedef struct kv_request {
    uint64_t   timestamp_ms;  /**< arrival time, ms from the start */
    uint32_t   input_tokens;  /**< prompt length in tokens */
    uint32_t   output_tokens; /**< answer length in tokens */
    size_t     num_keys;      /**< blocks of the prompt: its full blocks
                                   (generator), one per hash id (trace) */
    kvp_key_t *keys;          /**< chain of block keys; owned by the workload,
                                   valid until the next kv_workload_next()
                                   or kv_workload_destroy() */
} kv_request_t;

/** Parameters of kv_workload_generator_create(); zero fields take defaults. */
typedef struct kv_workload_params {
    uint64_t seed;           /**< generator seed */
    uint32_t block_tokens;   /**< tokens per block (default 256 if 0) */
    uint32_t conversations;  /**< concurrent conversations (default 64) */
    uint32_t system_prompts; /**< distinct shared system prompts (default 8) */
} kv_workload_params_t;

/**
 * @brief Create the built-in chat generator: seeded, deterministic and
 * infinite (the caller decides when to stop).
 *
 * It keeps @c conversations conversations open.  Each starts with one of
 * @c system_prompts shared system prompts (1..8 blocks long, Zipf-like
 * popularity: prompt i is chosen with weight 1/(i+1)) and lasts 1..10
 * turns, after which a new conversation replaces it.  Each request picks
 * an open conversation at random; its prompt is the whole conversation so
 * far (system prompt, earlier user messages and answers) plus a new user
 * message of 50..2000 tokens; its answer (20..800 tokens) joins the
 * conversation before its next turn.  A conversation whose next prompt would
 * pass KV_WORKLOAD_GEN_MAX_TOKENS ends early.  Token ids come from a PRNG
 * seeded per message, keys from kvp_chain_keys() over the whole prompt, so
 * equal prefixes give equal keys.  Arrivals are a Poisson process with a
 * mean gap of 50 ms; timestamps never decrease.  The same parameters always
 * give the same sequence of requests.
 *
 * @param [in]  params     the parameters, or NULL for all defaults.
 * @param [out] workload_p the new workload, set only on success; free it
 *                         with kv_workload_destroy().
 * @return KVP_OK; KVP_ERR_INVALID_PARAM (NULL @p workload_p, or a parameter
 *         above its KV_WORKLOAD_GEN_MAX_* limit); KVP_ERR_NO_MEMORY.
 */
kvp_status_t kv_workload_generator_create(const kv_workload_params_t *params,
                                          kv_workload_t **workload_p);

/**
 * @brief Open a Mooncake-format trace (JSONL: one object per line with
 * integer fields timestamp (ms), input_length, output_length and an array
 * hash_ids of 512-token block ids).  The file is read one line at a time,
 * as kv_workload_next() asks for requests; other fields are ignored.
 *
 * A request's keys are kvp_key_from_bytes() of each hash id written as 8
 * little-endian bytes (one key per hash id, the last one possibly naming a
 * partial block).  Every line is checked when it is read: see
 * kv_workload_next().
 *
 * @param [in]  path       the trace file.
 * @param [out] workload_p the new workload, set only on success; free it
 *                         with kv_workload_destroy().
 * @param [out] err        on failure, receives a NUL-terminated message
 *                         (truncated to @p err_len); may be NULL.
 * @param [in]  err_len    size of @p err.
 * @return KVP_OK; KVP_ERR_IO when the file cannot be opened (the message
 *         names the file and carries strerror); KVP_ERR_INVALID_PARAM for
 *         NULL arguments; KVP_ERR_NO_MEMORY.
 */
kvp_status_t kv_workload_trace_open(const char *path,
                                    kv_workload_t **workload_p, char *err,
                                    size_t err_len);

/**
 * @brief Produce the next request.
 *
 * For a trace, the next line is read and validated: it must be a JSON
 * object, at most KV_WORKLOAD_TRACE_LINE_MAX bytes, whose timestamp,
 * input_length and output_length are non-negative integers (the lengths at
 * most UINT32_MAX) and whose hash_ids is an array of at most
 * KV_WORKLOAD_TRACE_KEYS_MAX non-negative integers, exactly
 * ceil(input_length / 512) of them.  Blank lines are malformed.
 *
 * @param [in]  workload the workload.
 * @param [out] req      filled on success only; req->keys points into the
 *                       workload and stays valid until the next call or
 *                       kv_workload_destroy().
 * @return KVP_OK; KVP_ERR_NOT_FOUND at the end of a trace (and on every
 *         later call); KVP_ERR_INVALID_PARAM for NULL arguments or a bad
 *         trace line, whose message, "PATH:LINE: reason", kv_workload_error()
 *         returns (a bad line ends the trace: later calls fail the same
 *         way); KVP_ERR_IO if reading the file fails; KVP_ERR_NO_MEMORY.
 *         A generator never ends.
 */
kvp_status_t kv_workload_next(kv_workload_t *workload, kv_request_t *req);

/**
 * @brief The synthetic bytes of the block named @p key: SplitMix64 seeded
 * by the key's first 8 bytes, @p size bytes of it.  The demo and the live
 * replay store these and compare what they load with them, so a wrong byte
 * is seen.
 */
void kv_workload_block_bytes(const kvp_key_t *key, void *buf, uint64_t size);

/**
 * A worker's buffers for loading chains and checking them: one block
 * buffer per key of the longest chain seen so far (bufs, with caps, sizes
 * and statuses as kvp_get_chain() takes them), and want, one block for
 * kv_workload_block_bytes().  Start it zeroed.
 */
typedef struct kv_chain_buffers {
    uint64_t      block_size;
    size_t        cap;
    uint8_t     **bufs;
    uint64_t     *caps, *sizes;
    kvp_status_t *statuses;
    uint8_t      *want;
} kv_chain_buffers_t;

/** @brief Ready @p b for chains of @p block_size-byte blocks (aborts if out of memory). */
void kv_chain_buffers_init(kv_chain_buffers_t *b, uint64_t block_size);

/** @brief Make room for chains of @p n keys (aborts if out of memory). */
void kv_chain_buffers_reserve(kv_chain_buffers_t *b, size_t n);

/** @brief Free everything @p b holds. */
void kv_chain_buffers_cleanup(kv_chain_buffers_t *b);

/**
 * @brief The message of the last error of @p workload.
 * @return a string owned by the workload, valid until the next call on it;
 *         "" if there was no error (or @p workload is NULL).  Never NULL.
 */
const char *kv_workload_error(const kv_workload_t *workload);

/**
 * @brief Close the trace file (if any) and free the workload and every
 * request buffer it handed out.  NULL is accepted.
 */
void kv_workload_destroy(kv_workload_t *workload);

#ifdef __cplusplus
}
#endif
#endif
