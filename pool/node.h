/**
 * @file node.h
 * @brief The pool node: configuration, and the RPC service over the host
 * tier.  Private to pool/.
 */
#ifndef KV_POOL_NODE_H
#define KV_POOL_NODE_H

#include "arena.h"
#include "block_table.h"

#include <kv/evloop.h>
#include <kvproto/rpc_server.h>

#include <stdint.h>

#define KV_NODE_DEFAULT_PORT   7070
#define KV_NODE_DEFAULT_MEMORY (256ull << 20)

/** Everything the node reads from its flags and config file. */
typedef struct kv_node_config {
    char     listen[256];
    uint16_t port;
    uint64_t memory;
    char     token[KVP_TOKEN_MAX + 1];
    char     name[64];
    int      log_level;
    int      shared_memory;   /* hand the arena to clients on this host */
    uint32_t lease_ms;        /* GetStart leases and PutStart reservations */
    int      data_plane_ucx;  /* serve one-sided puts/gets of the arena over kvt "ucx" */
    char     eviction_policy[KV_EVICT_NAME_MAX + 1]; /* <kvstore/evict.h> */
    char     coordinator[256]; /* "HOST:PORT" of kvpool-coord, or "": none */
    char     advertise[256];   /* "HOST:PORT" clients dial, or "": listen:port */
    char     ssd_dir[256];     /* the SSD tier's directory, or "": none */
    uint64_t ssd_size;         /* its capacity in bytes */
    uint64_t ssd_segment_size; /* 0: ssd.h's default */
    uint32_t ssd_queue_depth;  /* I/Os in flight */
    int      ssd_sync;         /* fdatasync after each batch of writes */
    uint32_t ssd_readahead;    /* chain blocks staged after a GetStart's last */
    uint32_t high_watermark;   /* % of memory above which blocks are demoted */
    uint32_t low_watermark;    /* % demotion goes down to */
    int      http_port;        /* /metrics and /health on listen: -1 off, 0 any */
} kv_node_config_t;

/** Fill @p config with defaults. */
void kv_node_config_defaults(kv_node_config_t *config);

/**
 * Apply one "key = value" setting (section "node"); used by the INI loader
 * and by command-line flags alike, so both accept the same keys and limits.
 * @return KVP_OK, or KVP_ERR_CONFIG with a reason in @p err.
 */
kvp_status_t kv_node_config_set(kv_node_config_t *config, const char *key,
                                const char *value, char *err, size_t err_len);

/** Load an INI file into @p config (keys of section [node]). */
kvp_status_t kv_node_config_load(kv_node_config_t *config, const char *path,
                                 char *err, size_t err_len);

typedef struct kv_node kv_node_t;

/**
 * Allocate the arena, bind the RPC server on @p loop.
 * @return KVP_OK; KVP_ERR_NO_MEMORY (arena); KVP_ERR_CONFIG / KVP_ERR_IO
 *         (listening).
 */
kvp_status_t kv_node_create(kv_evloop_t *loop, const kv_node_config_t *config,
                            kv_node_t **node_p);

/** Close every connection and free the arena.  NULL is accepted. */
void kv_node_destroy(kv_node_t *node);

/** The TCP port the node listens on. */
uint16_t kv_node_port(const kv_node_t *node);

/** The port of the node's HTTP endpoint (/metrics, /health); 0 if it has none. */
uint16_t kv_node_http_port(const kv_node_t *node);

/** Periodic housekeeping (called from the loop's tick). */
void kv_node_tick(kv_node_t *node);

#endif
