/**
 * @file coord.h
 * @brief The coordinator: its configuration, and the service that keeps
 * the pool's membership, the global prefix index and placement.  Private
 * to coord/.
 */
#ifndef KV_COORD_COORD_H
#define KV_COORD_COORD_H

#include <kv/evloop.h>
#include <kvcoord/sched.h>
#include <kvpool/kvpool.h>

#include <stdint.h>

#define KV_COORD_DEFAULT_PORT      7080
#define KV_COORD_DEFAULT_LEASE_MS  3000
#define KV_COORD_DEFAULT_MAX_NODES 1024
#define KV_COORD_DEFAULT_MAX_INSTANCES 1024

/** Everything kvpool-coord reads from its flags and config file. */
typedef struct kv_coord_config {
    char     listen[256];
    uint16_t port;
    char     token[KVP_TOKEN_MAX + 1];
    uint32_t lease_ms;   /**< a node not heard from for this long is dropped */
    int      log_level;
    uint32_t max_nodes;  /**< nodes registered at once, 1..KV_COORD_NODE_MAX */
    uint32_t max_instances;       /**< inference instances, 1..KV_SCHED_INSTANCE_MAX */
    kv_sched_policy_t policy;     /**< scheduler_policy */
    uint64_t          seed;       /**< scheduler_seed: the random policy's */
    kv_sched_cost_t   cost;       /**< the cost model: one key per figure */
    int               http_port;  /**< /metrics, /health, /dashboard on listen:
                                       -1 off, 0 any free port */
} kv_coord_config_t;

/** Fill @p config with defaults. */
void kv_coord_config_defaults(kv_coord_config_t *config);

/**
 * Apply one "key = value" setting (section "coord"); used by the INI loader
 * and by command-line flags alike, so both accept the same keys and limits.
 * @return KVP_OK, or KVP_ERR_CONFIG with a reason in @p err.
 */
kvp_status_t kv_coord_config_set(kv_coord_config_t *config, const char *key,
                                 const char *value, char *err, size_t err_len);

/** Load an INI file into @p config (keys of section [coord]). */
kvp_status_t kv_coord_config_load(kv_coord_config_t *config, const char *path,
                                  char *err, size_t err_len);

typedef struct kv_coord kv_coord_t;

/**
 * Create the index and the node table and serve the Coordinator service on
 * @p loop.  The caller drives the loop and calls kv_coord_tick() at least
 * every kv_coord_tick_ms().
 * @param [out] coord_p set only on success; free with kv_coord_destroy().
 * @return KVP_OK; KVP_ERR_CONFIG / KVP_ERR_IO (listening, logged);
 *         KVP_ERR_NO_MEMORY; KVP_ERR_INTERNAL (a proto / code mismatch).
 */
kvp_status_t kv_coord_create(kv_evloop_t *loop, const kv_coord_config_t *config,
                             kv_coord_t **coord_p);

/** Close every connection and free the index.  NULL is accepted. */
void kv_coord_destroy(kv_coord_t *coord);

/** The TCP port the coordinator listens on. */
uint16_t kv_coord_port(const kv_coord_t *coord);

/** The port of the HTTP endpoint (/metrics, /dashboard...); 0 if it has none. */
uint16_t kv_coord_http_port(const kv_coord_t *coord);

/** How often kv_coord_tick() should run: a fraction of the lease. */
uint32_t kv_coord_tick_ms(const kv_coord_t *coord);

/** Periodic housekeeping: drop nodes whose lease ran out, stale handshakes. */
void kv_coord_tick(kv_coord_t *coord);

#endif
