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

/** Connect as @p conn says; prints a one-line reason on failure. */
kvp_status_t kv_cli_connect(const kv_cli_conn_t *conn, kvp_client_h *client_p);

/** `kvpool demo ...`; returns the process exit status. */
int kv_cli_demo(int argc, char **argv);

/** Options of `kvpool replay`. */
typedef struct kv_cli_replay_opts {
    const char *trace;      /**< the JSONL trace */
    const char *coord;      /**< live: the pool's HOST:PORT (coordinator or node) */
    const char *ns;         /**< namespace */
    const char *token;      /**< or NULL */
    uint64_t    block_size; /**< live: bytes per block */
    uint64_t    requests;   /**< records to replay; 0: all */
    double      time_scale; /**< live: pace by timestamp / time_scale; 0: don't */
    int         threads;    /**< live: worker threads */
    int         json;       /**< print a JSON summary line last */
} kv_cli_replay_opts_t;

/** `kvpool replay ...`; returns the process exit status. */
int kv_cli_replay(int argc, char **argv);

/**
 * The live replay (replay_live.c): every record's cached prefix loaded
 * and checked, its chain saved, against the pool at opts->coord.
 * @return the process exit status: 0, or 1 with a reason on stderr (a
 *         call failed or a byte differed), 2 for bad options.
 */
int kv_cli_replay_live(const kv_cli_replay_opts_t *opts);

/** `kvpool bench ...`; returns the process exit status. */
int kv_cli_bench(int argc, char **argv);

/** `kvpool bench-index ...` (the prefix index in process); returns the
 * process exit status. */
int kv_cli_bench_index(int argc, char **argv);

/**
 * Start kvpool-node ($KVPOOL_NODE_BIN, else next to this program, else in
 * the build tree) on a free loopback port with @p memory bytes, joining
 * the coordinator at @p coord ("HOST:PORT", or NULL for none), and write
 * its "HOST:PORT" into @p address.  It ends with this process.
 * @return its pid, or -1 (a reason is printed).
 */
pid_t kv_cli_node_start(const char *memory, const char *coord, char *address, size_t len);

/**
 * Start kvpool-coord ($KVPOOL_COORD_BIN, else as kv_cli_node_start()) on a
 * free loopback port and write its "HOST:PORT" into @p address.
 * @return its pid, or -1 (a reason is printed).
 */
pid_t kv_cli_coord_start(char *address, size_t len);

/** Stop a daemon started by the calls above (pid <= 0 is ignored). */
void kv_cli_daemon_stop(pid_t pid);

#endif
