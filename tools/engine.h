/**
 * @file engine.h
 * @brief The synthetic inference engine of `kvpool demo --disaggregated`
 * (`kvpool engine`, engine.c) and the jobs the demo sends it.
 *
 * The demo starts each engine as a child process with pipes on its stdin
 * and stdout.  The engine joins the coordinator as an instance, prints one
 * line, "kvpool engine NAME instance ID", then reads jobs from stdin and
 * answers each with one result on stdout, both binary (the structs below,
 * in this machine's byte order: both ends are the same program).
 *
 * A prefill engine loads the blocks the plan names (kvp_plan_load),
 * checks them, "computes" the rest (each block's bytes derive from its key:
 * kv_workload_block_bytes), and saves them where the plan says
 * (kvp_plan_save).  A decode engine loads the whole chain where the
 * handover plan says (kvp_plan_load; what it does not cover, through the
 * index: kvp_get_chain) and checks every byte.
 */
#ifndef KV_TOOLS_ENGINE_H
#define KV_TOOLS_ENGINE_H

#include <kvpool/kvpool.h>

#include <stddef.h>
#include <stdint.h>

#define KV_ENGINE_JOB_MAGIC 0x6b76656eu /* "kven" */

/** A job: followed by n_keys keys, then a kvp_plan_t: the Schedule plan
    for the prefill engine, its kvp_plan_handover() for the decode engine. */
typedef struct kv_engine_job {
    uint32_t magic;
    uint32_t n_keys;         /**< 1..KVP_BATCH_MAX */
    uint64_t id;
    uint32_t prompt_tokens;
    uint32_t output_tokens;
} kv_engine_job_t;

/** The answer to a job. */
typedef struct kv_engine_result {
    uint64_t     id;
    kvp_status_t status;     /**< KVP_OK, or the first failed call's */
    uint32_t     loaded;     /**< leading blocks loaded from the pool */
    uint32_t     computed;   /**< blocks made (prefill) */
    uint32_t     mismatches; /**< loaded blocks whose bytes were wrong */
    uint32_t     missing;    /**< decode: blocks of the chain not found */
} kv_engine_result_t;

/**
 * Read exactly @p len bytes from @p fd (the jobs' and results' pipes).
 * @return 1; 0 at the end of input before any byte; -1 on an error or an
 *         end of input part way.
 */
int kv_engine_read(int fd, void *buf, size_t len);

/** Write all @p len bytes to @p fd. @return 0; -1 on an error. */
int kv_engine_write(int fd, const void *buf, size_t len);

#endif
