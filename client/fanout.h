/**
 * @file fanout.h
 * @brief Run the parts of one call in parallel on a few library threads.
 * Private to client/.
 */
#ifndef KV_CLIENT_FANOUT_H
#define KV_CLIENT_FANOUT_H

#include <stddef.h>

typedef struct kvp__fanout_pool kvp__fanout_pool_t;

/** One part of a fan-out: part @p i of @p arg. */
typedef void (*kvp__part_func_t)(void *arg, size_t i);

/** Start the pool's threads (fewer, or none, if threads cannot be made). */
kvp__fanout_pool_t *kvp__fanout_pool_create(void);

/** Stop and join the threads.  No fan-out may be running.  NULL is accepted. */
void kvp__fanout_pool_destroy(kvp__fanout_pool_t *pool);

/**
 * Run @p func(@p arg, i) for i in 0..n-1, in parallel, and return when all
 * have returned.  The calling thread runs parts too, so this never waits
 * for a free thread.  Parts must not call kvp__fanout() themselves.
 */
void kvp__fanout(kvp__fanout_pool_t *pool, size_t n, kvp__part_func_t func, void *arg);

#endif
