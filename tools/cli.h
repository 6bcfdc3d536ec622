/**
 * @file cli.h
 * @brief Shared pieces of the kvpool command line.
 */
#ifndef KV_TOOLS_CLI_H
#define KV_TOOLS_CLI_H

#include <kvpool/kvpool.h>

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

/** `kvpool bench ...`; returns the process exit status. */
int kv_cli_bench(int argc, char **argv);

/** `kvpool bench-index ...` (the prefix index in process); returns the
 * process exit status. */
int kv_cli_bench_index(int argc, char **argv);

/**
 * Start kvpool-node (next to this program, in the build tree, or
 * $KVPOOL_NODE_BIN) on a free loopback port with @p memory bytes, and
 * write its "HOST:PORT" into @p address.  @return its pid, or -1 (a reason
 * is printed).
 */
pid_t kv_cli_node_start(const char *memory, char *address, size_t len);

/** Stop a node started by kv_cli_node_start() (pid <= 0 is ignored). */
void kv_cli_node_stop(pid_t pid);

#endif
