/**
 * @file cli.h
 * @brief Shared pieces of the kvpool command line.
 */
#ifndef KV_TOOLS_CLI_H
#define KV_TOOLS_CLI_H

#include <kvpool/kvpool.h>

#include <stdint.h>
#include <sys/types.h>

/** Common connection options of every subcommand. */
typedef struct kv_cli_conn {
    const char *node;  /**< HOST:PORT */
    const char *ns;    /**< namespace */
    const char *token; /**< from --token or $KVPOOL_TOKEN */
} kv_cli_conn_t;

/**
 * Parse @p text, the value of @p flag of `kvpool @p cmd`: decimal digits
 * only, @p min..@p max.
 * @return 1 with *@p value_p set; 0 after printing why not.
 */
int kv_cli_parse_u64(const char *cmd, const char *flag, const char *text, uint64_t min,
                     uint64_t max, uint64_t *value_p);

/** Connect as @p conn says; prints a one-line reason on failure. */
kvp_status_t kv_cli_connect(const kv_cli_conn_t *conn, kvp_client_h *client_p);

/** `kvpool demo ...`; returns the process exit status. */
int kv_cli_demo(int argc, char **argv);

/** `kvpool bench ...`; returns the process exit status. */
int kv_cli_bench(int argc, char **argv);

/** `kvpool bench-index ...` (the prefix index in process; with --rpc the
 * coordinator's Match RPC); returns the process exit status. */
int kv_cli_bench_index(int argc, char **argv);

/** `kvpool bench-sched ...` (the scheduler in process over a large index);
 * returns the process exit status. */
int kv_cli_bench_sched(int argc, char **argv);

/** `kvpool simulate ...` (disaggregated serving of a trace, simulated);
 * returns the process exit status. */
int kv_cli_simulate(int argc, char **argv);

/** `kvpool demo --disaggregated ...`; returns the process exit status. */
int kv_cli_demo_disagg(int argc, char **argv);

/** `kvpool engine ...` (the synthetic engine the disaggregated demo starts);
 * returns the process exit status. */
int kv_cli_engine(int argc, char **argv);

/** `kvpool gen-trace ...` (a synthetic trace in the Mooncake format on
 * stdout); returns the process exit status. */
int kv_cli_gen_trace(int argc, char **argv);

/** Most --threads of a live replay. */
#define KV_CLI_REPLAY_THREADS_MAX 64

/** Tokens per block of a replayed trace's hash_ids (Mooncake: 512). */
#define KV_CLI_REPLAY_BLOCK_TOKENS 512

/** Options of `kvpool replay`, parsed once for both of its modes. */
typedef struct kv_cli_replay_opts {
    const char *trace;           /**< the Mooncake-format JSONL trace */
    uint64_t    max_requests;    /**< --requests: records to read, 0 = all */
    int         json;            /**< --json: a JSON summary line last */
    int         progress;        /**< progress lines on stderr (a tty, or
                                      --progress) */
    /* offline (--offline): the index and eviction code in process */
    int         offline;
    uint64_t    capacity_blocks; /**< --capacity-blocks, 0 = no limit */
    const char *policy;          /**< --policy, a kv_evict_policy_names() name */
    /* live (--coord): against a coordinator and its nodes */
    const char *coord;           /**< --coord HOST:PORT (a single node works too) */
    uint64_t    block_size;      /**< --block-size of the synthetic payloads */
    double      time_scale;      /**< --time-scale: pace by timestamp / this; 0 = don't */
    int         threads;         /**< --threads: workers taking records in order */
    const char *ns;              /**< --ns: the namespace */
    const char *token;           /**< --token, or $KVPOOL_TOKEN, or NULL */
} kv_cli_replay_opts_t;

/** What only a live replay measures (kv_cli_replay_result_t::live). */
typedef struct kv_cli_replay_live_result {
    uint64_t block_size;
    uint64_t bytes;              /**< block bytes loaded or saved */
    uint64_t get_p50_us, get_p99_us; /**< per request: the kvp_get_chain call */
    uint64_t put_p50_us, put_p99_us; /**< per request that saved blocks: kvp_put_chain */
    uint64_t errors;             /**< failed calls and wrong bytes */
} kv_cli_replay_live_result_t;

/** What a replay counted; kv_cli_replay_count() adds one request. */
typedef struct kv_cli_replay_result {
    uint64_t    requests;
    uint64_t    blocks;          /**< blocks requested */
    uint64_t    hit_blocks;      /**< of them, in the cached prefix */
    uint64_t    input_tokens;    /**< prompt tokens */
    uint64_t    hit_tokens;      /**< of them, in the cached prefix */
    uint64_t    evictions;       /**< blocks evicted (offline) */
    const char *policy;          /**< eviction policy (static storage) */
    uint64_t    capacity_blocks; /**< 0 = no limit */
    double      seconds;         /**< wall time of the replay */
    const kv_cli_replay_live_result_t *live; /**< live figures, or NULL */
} kv_cli_replay_result_t;

/** `kvpool replay ...`: parses the options, runs the offline mode or
 * kv_cli_replay_live(); returns the process exit status. */
int kv_cli_replay(int argc, char **argv);

/**
 * The live mode of `kvpool replay` (@p opts->coord set, or no mode named).
 * @return the process exit status.
 */
int kv_cli_replay_live(const kv_cli_replay_opts_t *opts);

/**
 * Count one request of @p input_tokens tokens and @p blocks blocks whose
 * first @p matched blocks were cached: the cached prefix holds
 * min(@p matched * KV_CLI_REPLAY_BLOCK_TOKENS, @p input_tokens) tokens.
 */
void kv_cli_replay_count(kv_cli_replay_result_t *result, uint64_t input_tokens,
                         uint64_t blocks, uint64_t matched);

/** One progress line on stderr (requests, blocks, hit ratios, rate). */
void kv_cli_replay_progress(const kv_cli_replay_result_t *result, double seconds);

/**
 * Print the summary on stdout: one "name value" line per figure, then,
 * with @p opts->json, one JSON object on the last line with mode
 * ("offline" or "live"), requests, blocks, hit_blocks, hit_ratio,
 * input_tokens, hit_tokens, token_hit_ratio, policy, capacity_blocks (0:
 * no limit, or unknown), evictions and seconds; live, also block_size,
 * bytes, gbps, get_p50_us, get_p99_us, put_p50_us, put_p99_us and errors.
 */
void kv_cli_replay_report(const kv_cli_replay_opts_t *opts,
                          const kv_cli_replay_result_t *result);

/**
 * Start kvpool-node ($KVPOOL_NODE_BIN, else next to this program, else in
 * the build tree) on a free loopback port with @p memory bytes, joining
 * the coordinator at @p coord ("HOST:PORT", or NULL for none), and write
 * its "HOST:PORT" into @p address.  It ends with this process.
 * @return its pid, or -1 (a reason is printed).
 */
pid_t kv_cli_node_start(const char *memory, const char *coord, char *address, size_t len);

/** kv_cli_node_start() of a node with an SSD tier of @p ssd_size in @p ssd_dir. */
pid_t kv_cli_node_start_ssd(const char *memory, const char *ssd_dir, const char *ssd_size,
                            char *address, size_t len);

/**
 * Start kvpool-coord ($KVPOOL_COORD_BIN, else as kv_cli_node_start()) on a
 * free loopback port and write its "HOST:PORT" into @p address; if @p http
 * is not NULL, with its HTTP endpoint (/metrics, /dashboard) on another
 * free port, whose "HOST:PORT" goes into @p http.
 * @return its pid, or -1 (a reason is printed).
 */
pid_t kv_cli_coord_start(char *address, size_t len, char *http, size_t http_len);

/** Stop a daemon started by the calls above (pid <= 0 is ignored). */
void kv_cli_daemon_stop(pid_t pid);

/** Most nodes kv_cli_pool_start() starts. */
#define KV_CLI_POOL_NODES_MAX 16

/** A pool started as child processes: a coordinator and its nodes. */
typedef struct kv_cli_pool {
    pid_t coord;
    pid_t nodes[KV_CLI_POOL_NODES_MAX];
    int   num_nodes;
    char  address[256];                                  /**< the coordinator's */
    char  http[256];                                     /**< its HTTP endpoint's */
    char  node_addresses[KV_CLI_POOL_NODES_MAX][256];    /**< each node's */
} kv_cli_pool_t;

/**
 * Start a coordinator and @p n (<= KV_CLI_POOL_NODES_MAX) nodes of
 * @p memory joined to it, in a zeroed @p pool.
 * @return 0; -1 with a reason printed and nothing left running.
 */
int kv_cli_pool_start(kv_cli_pool_t *pool, int n, const char *memory);

/** Print where the pool's dashboard is and wait for SIGINT or SIGTERM (demo --serve). */
void kv_cli_pool_serve(const kv_cli_pool_t *pool);

/** Stop what kv_cli_pool_start() started (a zeroed pool: nothing). */
void kv_cli_pool_stop(kv_cli_pool_t *pool);

/**
 * Wait up to 10 s until the coordinator @p client is connected to has
 * @p n nodes (they join as they start).
 * @return KVP_OK; KVP_ERR_TIMED_OUT (printed); a call's error.
 */
kvp_status_t kv_cli_pool_wait_joined(kvp_client_h client, int n);

#endif
