/**
 * @file arena.h
 * @brief The node's host-memory arena and its block allocator.
 *
 * One region is mapped at start-up (huge pages when possible) and carved into
 * extents by a TLSF-style ("two-level segregated fit") offset allocator:
 *  - the granularity is 4 KiB: every offset is 4 KiB aligned and every size
 *    is rounded up to a multiple of 4 KiB;
 *  - all metadata lives in side tables, none inside the arena: the arena
 *    bytes belong entirely to the caller;
 *  - alloc and free are O(1) (see arena.c for the one bounded exception);
 *  - free extents are coalesced with their free neighbours at once, so
 *    freeing everything leaves a single free extent of the whole capacity.
 *
 * Allocations are named by their byte offset from the arena base, so they
 * stay meaningful to a peer that registered the same region (RDMA, GPU).
 *
 * Threading: none.  The arena belongs to one thread (the node's event loop).
 */
#ifndef KV_POOL_ARENA_H
#define KV_POOL_ARENA_H

#include <kvpool/status.h>

#include <stdint.h>

/** Allocation granularity of the arena, in bytes. */
#define KV_ARENA_PAGE_SIZE ((uint64_t)4096)

/** Largest arena, in bytes: 2^32 - 2 pages (just under 16 TiB). */
#define KV_ARENA_MAX_SIZE (((uint64_t)UINT32_MAX - 1) * KV_ARENA_PAGE_SIZE)

typedef struct kv_arena kv_arena_t;

/**
 * @brief Map a new arena of @p size bytes.
 *
 * @p size is rounded down to a multiple of 4 KiB.  When it is a multiple of
 * 2 MiB, MAP_HUGETLB is tried first; otherwise, or if that fails, normal
 * pages are mapped and MADV_HUGEPAGE asked for (transparent huge pages).
 * The memory is not touched (it is faulted in on first use).
 *
 * @param [in]  size    arena size in bytes, >= 4 KiB after rounding.
 * @param [out] arena_p the new arena, set only on success; the caller owns
 *                      it and releases it with kv_arena_destroy().
 * @return KVP_OK; KVP_ERR_INVALID_PARAM if @p size is below 4 KiB or
 *         @p arena_p is NULL; KVP_ERR_TOO_LARGE above KV_ARENA_MAX_SIZE;
 *         KVP_ERR_NO_MEMORY if mmap fails (logged).
 */
kvp_status_t kv_arena_create(uint64_t size, kv_arena_t **arena_p);

/**
 * @brief The memfd behind the arena's shared mapping, for handing the arena
 * to clients on the same host.  Owned by the arena (closed by destroy).
 */
int kv_arena_fd(const kv_arena_t *arena);

/**
 * @brief Unmap the arena and free its tables.  Every offset handed out
 * becomes invalid, allocated or not.  NULL is accepted.
 */
void kv_arena_destroy(kv_arena_t *arena);

/**
 * @brief Allocate an extent of at least @p size bytes.
 *
 * @param [in]  size     requested bytes, rounded up to 4 KiB.
 * @param [out] offset_p the extent's offset from the arena base (4 KiB
 *                       aligned), set only on success.  The extent is the
 *                       caller's until it passes the offset to
 *                       kv_arena_free().
 * @return KVP_OK; KVP_ERR_INVALID_PARAM if @p size is 0; KVP_ERR_TOO_LARGE
 *         if @p size exceeds the capacity; KVP_ERR_NO_SPACE if no free
 *         extent is large enough (then kv_arena_largest_free() < @p size).
 */
kvp_status_t kv_arena_alloc(kv_arena_t *arena, uint64_t size,
                            uint64_t *offset_p);

/**
 * @brief Return an extent to the arena and merge it with its free
 * neighbours.  @p offset must be one that kv_arena_alloc() returned and that
 * was not freed since: anything else (an interior, unaligned, out-of-range or
 * already freed offset) is a bug, logged and aborted on.
 */
void kv_arena_free(kv_arena_t *arena, uint64_t offset);

/**
 * @return the address of byte @p offset of the arena (@p offset must be
 *         below the capacity).  The pointer is valid until the arena is
 *         destroyed.
 */
void *kv_arena_ptr(const kv_arena_t *arena, uint64_t offset);

/** @return the arena's base address (offset 0). */
void *kv_arena_base(const kv_arena_t *arena);

/** @return the arena's size in bytes (a multiple of 4 KiB). */
uint64_t kv_arena_capacity(const kv_arena_t *arena);

/** @return bytes in allocated extents (sizes after rounding to 4 KiB). */
uint64_t kv_arena_used(const kv_arena_t *arena);

/**
 * @return the size of the biggest free extent, in bytes: kv_arena_alloc()
 *         of this many bytes (if non-zero) succeeds now.  O(length of the
 *         top non-empty free list), meant for statistics.
 */
uint64_t kv_arena_largest_free(const kv_arena_t *arena);

/**
 * @return the rounded size, in bytes, of the allocated extent at @p offset
 *         (@p offset must be allocated, as for kv_arena_free()).
 */
uint64_t kv_arena_alloc_size(const kv_arena_t *arena, uint64_t offset);

/**
 * @return how many free extents the arena holds now: 1 when nothing is
 *         allocated, 0 when everything is; a measure of fragmentation.
 */
uint64_t kv_arena_free_extents(const kv_arena_t *arena);

/**
 * @brief Walk every table of the arena and verify its invariants (for tests
 * and debugging; O(pages)).  Each violation found is logged at error level.
 * @return KVP_OK, or KVP_ERR_INTERNAL if an invariant is broken.
 */
kvp_status_t kv_arena_check(const kv_arena_t *arena);

#endif
