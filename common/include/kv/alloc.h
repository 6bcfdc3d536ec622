/**
 * @file alloc.h
 * @brief All allocation goes through here.
 *
 * Out-of-memory policy: small control allocations abort the process with a
 * log line (there is nothing sensible to do without a few hundred bytes).
 * Large data buffers (arenas, block payloads) use kv_malloc_try(), which
 * returns NULL, so the caller can answer KVP_ERR_NO_MEMORY instead.
 */
#ifndef KV_ALLOC_H
#define KV_ALLOC_H

#include <stddef.h>

/** Allocate @p size bytes for @p purpose; aborts on failure. */
void *kv_malloc(size_t size, const char *purpose);
/** Zeroed kv_malloc(). */
void *kv_calloc(size_t count, size_t size, const char *purpose);
/** Resize; aborts on failure. */
void *kv_realloc(void *ptr, size_t size, const char *purpose);
/** Duplicate a string; aborts on failure. */
char *kv_strdup(const char *str, const char *purpose);
/** Allocate a data buffer; NULL on failure (logged). */
void *kv_malloc_try(size_t size, const char *purpose);
/** Free memory from any of the above; NULL is accepted. */
void kv_free(void *ptr);

#endif
