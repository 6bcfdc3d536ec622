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
